//! `retrace replay` for one model: the generic half of the command.

use crate::replay_cli::{ReplayArgs, ReplayOutcome};
use crate::summary::event_line;
use anyhow::anyhow;
use retrace_replayer::{Causality, CheckpointPolicy, Cursor, Replay};
use retrace_sim::{codec, Model, Node, Trace};

/// How many causally preceding events a divergence report shows.
const LED_THERE: usize = 12;

pub fn replay<M: Model>(trace: Trace, args: &ReplayArgs) -> anyhow::Result<ReplayOutcome> {
    let replay = Replay::<M>::new(trace).map_err(|e| anyhow!("{}: {e}", args.trace.display()))?;
    let steps = replay.steps.len();
    let target = match args.to {
        Some(index) => replay.steps.step_at_or_before(index).map_or(0, |s| s + 1),
        None => steps,
    };
    let mut cursor = Cursor::new(replay, CheckpointPolicy::default());
    let describe = |p: &[u8]| match codec::decode::<<M::Node as Node>::Msg>(p) {
        Ok(m) => format!("{m:?}"),
        Err(_) => format!("<{} bytes>", p.len()),
    };
    while cursor.position() < target {
        let before = cursor.position();
        let advanced = cursor.forward();
        if args.print && !args.json {
            let r = cursor.replay();
            let st = &r.steps.steps[before];
            for e in &r.trace.events[st.input..st.end] {
                println!("{}", event_line(&r.trace.header, e, &describe));
            }
        }
        if !advanced {
            break;
        }
    }
    let r = cursor.replay();
    let violations: Vec<(String, String)> = cursor
        .violations()
        .map(|v| {
            let line = format!(
                "`{}` violated after event {}: {}",
                v.invariant, v.input_index, v.message
            );
            (v.invariant.clone(), line)
        })
        .collect();
    let (divergence, led_there) = match cursor.divergence() {
        Some(d) => {
            let causality = Causality::new(&r.steps, &r.trace.events, r.node_names.len());
            let history = causality.why(d.step);
            let recent: Vec<String> = history
                .iter()
                .rev()
                .take(LED_THERE)
                .rev()
                .map(|&s| {
                    event_line(
                        &r.trace.header,
                        &r.trace.events[r.steps.steps[s].input],
                        &describe,
                    )
                })
                .collect();
            (Some(d.to_string()), recent)
        }
        None => (None, Vec::new()),
    };
    let json = serde_json::json!({
        "trace": args.trace.display().to_string(),
        "steps": steps,
        "replayed": cursor.position(),
        "ok": divergence.is_none(),
        "divergence": cursor.divergence().map(|d| serde_json::json!({
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
        steps,
        applied: cursor.position(),
        divergence,
        led_there,
        violations,
        json,
    })
}
