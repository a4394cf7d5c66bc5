//! `retrace merge`: the logs of a recorded run become one trace.
//!
//! Each node's logs (its incarnations in order) give its program order; each delivery names
//! the message id of its send. The merged order is a topological order of that
//! happens-before graph, choosing among ready events by wall-clock time, then node id, then
//! position: deterministic, consistent with causality, and close to real time. Times in the
//! trace are the recorded wall-clock times (which may step back between nodes whose clocks
//! disagree; causality never does).
//!
//! A missing or torn log is reported by name and the rest still merges: messages whose send
//! was not recorded become external inputs at their receivers. Deliveries duplicated by
//! reconnects are dropped by message id.

mod emit;
mod load;
mod order;

use crate::log::RecordError;
use crate::manifest::Manifest;
use crate::tap::TapRecord;
use emit::Emitter;
use load::{link_deliveries, load_steps};
pub(crate) use load::{push_life, Step};
use order::Order;
use retrace_sim::trace::{Header, NodeInfo, Origin, Outcome, TraceOut, TraceReader, TraceWriter};
use std::path::Path;

/// What the merge did, and what it could not use.
#[derive(Debug, Default)]
pub struct MergeReport {
    pub logs: usize,
    pub steps: u64,
    pub records: u64,
    pub bytes: u64,
    /// Messages whose send is not in any log, delivered without a causal link.
    pub black_box_messages: u64,
    pub duplicates_dropped: u64,
    /// Missing, torn or incomplete logs, by name.
    pub problems: Vec<String>,
    /// Lives whose older segments retention deleted (merged from their first snapshot), or
    /// that it deleted whole.
    pub retained: Vec<String>,
}

/// Merges the run in `dir` into a trace at `out`: load every log, order the steps, emit them.
pub fn merge(dir: &Path, out: &Path) -> Result<MergeReport, RecordError> {
    let manifest = Manifest::read(dir)?;
    let mut report = MergeReport::default();
    let per_node = load_steps(dir, &manifest, &mut report);
    let names: Vec<String> = manifest.nodes.iter().map(|n| n.name.clone()).collect();
    let header = Header {
        origin: Origin::Recorded {
            description: format!("merged from {} ({} logs)", dir.display(), report.logs),
        },
        model: manifest.model.clone(),
        scenario_name: manifest.scenario_name.clone(),
        scenario_toml: manifest.scenario_toml.clone(),
        nodes: NodeInfo::list(
            manifest
                .nodes
                .iter()
                .map(|n| (n.name.as_str(), n.role.as_str())),
        ),
        writer: concat!("retrace-recorder ", env!("CARGO_PKG_VERSION")).to_string(),
    };
    let (taps, tap_logs) =
        crate::tap::load_taps(&[dir.to_path_buf()], 0, u64::MAX, &mut report.problems)?;
    report.logs += tap_logs;
    write_trace(per_node, taps, &names, &header, out, &mut report)?;
    Ok(report)
}

/// Orders every node's program-ordered steps by happens-before and writes them as the trace
/// `out`, checked by reading it back (merge and capture alike).
pub(crate) fn write_trace(
    mut per_node: Vec<Vec<Step>>,
    taps: Vec<TapRecord>,
    names: &[String],
    header: &Header,
    out: &Path,
    report: &mut MergeReport,
) -> Result<(), RecordError> {
    link_deliveries(&mut per_node, report);
    let file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let trace = TraceOut::new(Some(TraceWriter::to_sink(header, Box::new(file))));
    let mut emitter = Emitter::new(trace, per_node.len());
    let mut order = Order::new(&per_node);
    let total: usize = per_node.iter().map(Vec::len).sum();
    let mut sent = Vec::new();
    // What taps saw goes in by time, before the first step that is later: a tap observes
    // no node's causality, so time is all that places it.
    let mut taps = taps.into_iter().peekable();
    for _ in 0..total {
        let (node, pos) = order
            .next(&mut per_node, names, report)
            .ok_or("merge made no progress")?;
        let wall_ns = per_node[node][pos].wall_ns;
        while let Some(tap) = taps.next_if(|t| t.wall_ns <= wall_ns) {
            emitter.wire(tap);
        }
        sent.clear();
        emitter.step(&per_node[node][pos], names, &mut sent)?;
        for msg in &sent {
            order.sent(&per_node, msg);
        }
        order.emitted(&per_node, node, pos);
        report.steps += 1;
    }
    for tap in taps {
        emitter.wire(tap);
    }
    let mut trace = emitter.trace;
    let end_ns = emitter.last_wall_ns;
    trace.push(|e, o| e.end(o, end_ns, Outcome::Recorded));
    report.records = trace.next_index();
    let writer = trace.writer.take().ok_or("trace writer missing")?;
    report.bytes = writer
        .finish()
        .map_err(|e| format!("{}: {e}", out.display()))?;
    check_readable(out)?;
    Ok(())
}

/// Reads the merged trace back through the reader every consumer uses: what merge writes,
/// every tool must be able to read, so a trace the validator would refuse is merge's
/// error, reported here rather than by the first tool to open it.
fn check_readable(out: &Path) -> Result<(), String> {
    let (_, mut reader) = TraceReader::open(out).map_err(|e| e.to_string())?;
    reader.by_ref().for_each(drop);
    match reader.tail_error() {
        Some(tail) => Err(format!(
            "{}: the merged trace does not read back: {tail}",
            out.display()
        )),
        None => Ok(()),
    }
}
