//! `retrace replay` for one model: the generic half of the command. It re-executes
//! straight from the file (`retrace_replayer::stream`), so a trace of any size replays in
//! memory that does not grow with it.

use crate::replay_cli::{open_indexed, ReplayArgs, ReplayOutcome};
use crate::summary::event_line;
use anyhow::anyhow;
use retrace_replayer::stream::replay_file;
use retrace_sim::{codec, Model, Node};

/// How many causally preceding events a divergence report shows.
const LED_THERE: usize = 12;

pub fn replay<M: Model>(args: &ReplayArgs) -> anyhow::Result<ReplayOutcome> {
    let describe = |p: &[u8]| match codec::decode::<<M::Node as Node>::Msg>(p) {
        Ok(m) => format!("{m:?}"),
        Err(_) => format!("<{} bytes>", p.len()),
    };
    let header = retrace_sim::trace::TraceReader::open(&args.trace)
        .map_err(anyhow::Error::msg)?
        .0;
    let print = args.print && !args.json;
    let mut on_step = |records: &[retrace_sim::Event]| {
        if print {
            for e in records {
                println!("{}", event_line(&header, e, &describe));
            }
        }
    };
    let out = replay_file::<M>(&args.trace, args.to.map(|t| t as u64), &mut on_step)
        .map_err(|e| anyhow!("{}: {e}", args.trace.display()))?;
    let violations: Vec<(String, String)> = out
        .violations
        .iter()
        .map(|v| {
            let line = format!(
                "`{}` violated after event {}: {}",
                v.invariant, v.input_index, v.message
            );
            (v.invariant.clone(), line)
        })
        .collect();
    let (divergence, led_there) = match &out.divergence {
        Some(d) => {
            // What led there, through the index: the file is read again only around it.
            let mut trace = open_indexed(&args.trace)?;
            let past = trace.why(d.input_index as u64, LED_THERE)?;
            let mut recent = Vec::with_capacity(past.nearest.len());
            for i in past.nearest {
                recent.push(event_line(&header, &trace.event(i)?, &describe));
            }
            (Some(d.to_string()), recent)
        }
        None => (None, Vec::new()),
    };
    let json = serde_json::json!({
        "trace": args.trace.display().to_string(),
        "steps": out.steps,
        "replayed": out.applied,
        "ok": divergence.is_none(),
        "divergence": out.divergence.as_ref().map(|d| serde_json::json!({
            "event": d.record_index,
            "step_event": d.input_index,
            "node": d.node_name,
            "expected": d.expected,
            "actual": d.actual,
            "changes": d.changes.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        })),
        "invariant_violations": violations.iter().map(|(_, line)| line).collect::<Vec<_>>(),
    });
    Ok(ReplayOutcome {
        steps: out.steps,
        applied: out.applied,
        divergence,
        led_there,
        violations,
        violations_more: out.violations_more,
        json,
        tail: out.tail,
    })
}
