//! Plain-text renderings of runs and traces, readable in an 80-column terminal.

use crate::registry::ScenarioInfo;
use retrace_sim::trace::{FaultRecord, Header, Record};
use retrace_sim::{format_ns, Event, Outcome, RunReport};
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

/// `1234567` as `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

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
            for line in wrap(&text, 68) {
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

/// One dense line describing a trace event. `describe` renders a message payload.
pub fn event_line(header: &Header, event: &Event, describe: &dyn Fn(&[u8]) -> String) -> String {
    let name = |id: retrace_sim::NodeId| {
        header
            .nodes
            .get(id.index())
            .map_or_else(|| format!("n{}", id.0), |n| n.name.clone())
    };
    let ids = |ids: &[retrace_sim::RequestId]| {
        if ids.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = ids.iter().map(|r| r.to_string()).collect();
            format!(" [{}]", list.join(","))
        }
    };
    let node = event.node.map(name).unwrap_or_default();
    let detail = match &event.record {
        Record::Start { seed, .. } => format!("seed {seed:016x}"),
        Record::Restart {
            seed,
            storage_digest,
            ..
        } => {
            format!("seed {seed:016x}, storage {storage_digest:016x}")
        }
        Record::Deliver {
            from,
            send,
            request_ids,
            payload,
            ..
        } => {
            format!(
                "from {} (send #{send}){} {}",
                name(*from),
                ids(request_ids),
                describe(payload)
            )
        }
        Record::Timer {
            timer,
            tag,
            set,
            request_ids,
            ..
        } => {
            format!(
                "timer t{} tag {tag} (set #{set}){}",
                timer.0,
                ids(request_ids)
            )
        }
        Record::External {
            request, payload, ..
        } => format!("{request} {}", describe(payload)),
        Record::Crash { .. } => "volatile state and unsynced writes lost".to_string(),
        Record::Fault(FaultRecord::Cut { id, links }) => {
            let shown: Vec<String> = links
                .iter()
                .take(6)
                .map(|(a, b)| format!("{}->{}", name(*a), name(*b)))
                .collect();
            let more = if links.len() > 6 {
                format!(" (+{} more)", links.len() - 6)
            } else {
                String::new()
            };
            format!("cut #{id}: {}{more}", shown.join(" "))
        }
        Record::Fault(FaultRecord::Heal { id }) => format!("heal cut #{id}"),
        Record::Fault(FaultRecord::ClockJump { node, by_ns }) => {
            let sign = if *by_ns < 0 { "-" } else { "+" };
            format!(
                "clock of {} jumps {sign}{}",
                name(*node),
                format_ns(by_ns.unsigned_abs())
            )
        }
        Record::Drop { send, reason } => {
            format!("message of send #{send} lost ({})", reason.as_str())
        }
        Record::Duplicate { send } => format!("message of send #{send} duplicated"),
        Record::Send { to, digest } => format!("to {} (digest {digest:016x})", name(*to)),
        Record::TimerSet {
            timer,
            tag,
            after_ns,
        } => format!("t{} tag {tag} in {}", timer.0, format_ns(*after_ns)),
        Record::TimerCancel { timer } => format!("t{}", timer.0),
        Record::Annotate { text } => format!("{text:?}"),
        Record::ClockRead { value_ns } => format_ns(*value_ns),
        Record::Respond { request, digest } => format!("{request} (digest {digest:016x})"),
        Record::Violation {
            step,
            invariant,
            message,
        } => format!("after #{step}: {invariant}: {message}"),
        Record::End { outcome } => outcome_text(*outcome).to_string(),
        Record::Busy { ns } => format!("service time {}", format_ns(*ns)),
        Record::Queued { ns } => format!("waited {} for the node", format_ns(*ns)),
    };
    format!(
        "{:>8} {:>13} {:<10} {:<12} {}",
        event.index,
        format_ns(event.time_ns),
        node,
        event.record.kind(),
        detail
    )
}

fn outcome_text(outcome: Outcome) -> &'static str {
    outcome.as_str()
}
