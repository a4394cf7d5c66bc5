//! A witness drawn as text: one line per operation, its interval as a bar on a shared axis
//! (the distinct call and answer points of the witness, evenly spaced), so overlaps and
//! real-time order read at a glance.
//!
//! ```text
//! key "k3": these 3 operations cannot be ordered (each takes effect once, between its call and its answer)
//!   r12 client-0   put k3 = v1 -> ok       |---|
//!   r15 client-1   put k3 = v2 -> ok               |---|
//!   r19 client-2   get k3 -> v1                            |---|
//! ```

use super::{Spec, Witness};
use crate::format_ns;
use crate::history::{History, Instant};
use crate::ids::NodeId;

/// Width of one step of the axis, in characters.
const STEP: usize = 4;
/// Longest operation text shown before it is cut.
const TEXT_MAX: usize = 56;

/// Draws `w` (see the module docs); `name` names nodes.
pub fn draw<S: Spec>(
    history: &History<S::Msg>,
    w: &Witness,
    name: &dyn Fn(NodeId) -> String,
) -> String {
    let ops: Vec<_> = w.ops.iter().map(|&i| &history.ops()[i]).collect();
    let answered = |ret: Instant| ret != Instant::NEVER && ret <= w.cut;
    let mut points: Vec<Instant> = ops
        .iter()
        .flat_map(|o| [Some(o.call), answered(o.ret).then_some(o.ret)])
        .flatten()
        .collect();
    points.sort_unstable();
    points.dedup();
    let col = |p: Instant| points.binary_search(&p).unwrap_or(points.len()) * STEP;
    let end = points.len() * STEP;
    let labels: Vec<String> = ops
        .iter()
        .map(|o| {
            let output = o.output.as_ref().filter(|_| answered(o.ret));
            let mut text = S::describe(&o.input, output);
            if text.chars().count() > TEXT_MAX {
                text = text.chars().take(TEXT_MAX - 3).collect::<String>() + "...";
            }
            let node = o.answered_by.unwrap_or(o.node);
            format!("{:<5} {:<10} {text}", o.request.to_string(), name(node))
        })
        .collect();
    let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let mut out = format!(
        "key {:?}: {} operation{} of {} cannot be ordered (each takes effect once, between its call and its answer){}\n",
        w.key,
        ops.len(),
        if ops.len() == 1 { "" } else { "s" },
        w.key_ops,
        if w.minimal { "" } else { "; the search ran out of budget, so some may not be needed" },
    );
    for (o, label) in ops.iter().zip(&labels) {
        let from = col(o.call);
        let (to, close) = if answered(o.ret) {
            (col(o.ret), '|')
        } else {
            (end, '>')
        };
        let pad = width - label.chars().count();
        let mut bar = " ".repeat(from);
        bar.push('|');
        bar.push_str(&"-".repeat(to.saturating_sub(from + 1)));
        bar.push(close);
        let when = match o.ret_ns.filter(|_| answered(o.ret)) {
            Some(r) => format!("{} .. {}", format_ns(o.call_ns), format_ns(r)),
            None => format!("{} .. (no answer)", format_ns(o.call_ns)),
        };
        out.push_str(&format!(
            "  {label}{:pad$}  {bar:<w$}  {when}\n",
            "",
            w = end + 1
        ));
    }
    out
}
