//! Building an index: one validating pass over the trace, keeping per block what reading
//! it needs, the clocks at checkpoints and the faults with what judging them needs.

use super::access::BlockReader;
use super::clocks::ClockWalker;
use super::{Block, FaultEntry, IndexError, Layout, BLOCK_RECORDS};
use retrace_sim::trace::{DropReason, FaultRecord, Header, Record, TraceError, TraceReader};
use retrace_sim::NodeId;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Sends whose drop the builder can still judge without reading them back (mirrors the
/// walker's table; a miss reads the send's block).
const SENDS_MAX: usize = 1 << 16;

struct SendMeta {
    from: NodeId,
    to: NodeId,
    /// The sending step's position on `from`.
    sender: Option<u32>,
    left: u32,
}

pub(crate) fn build(path: &Path) -> Result<Layout, IndexError> {
    build_from(path, TraceReader::open(path)?)
}

/// Builds the index of the trace at `path` from `reader`, which reads the same bytes: the
/// file itself, or the bytes on their way to it while a run writes it (records are read
/// back from the file only once their block is complete, so already written).
pub(crate) fn build_from<R: Read>(
    path: &Path,
    (header, mut reader): (Header, TraceReader<R>),
) -> Result<Layout, IndexError> {
    let n = header.nodes.len();
    let mut layout = Layout {
        nodes: n,
        records: 0,
        clock_every: Layout::clock_every_for(n),
        blocks: Vec::new(),
        checkpoints: Vec::new(),
        faults: Vec::new(),
        states: Vec::new(),
        tail: None,
        complete: false,
        header,
    };
    // Reads back what the tables evicted: only blocks already complete (`layout.records`
    // counts them while building), so no block is cached half read.
    let mut back = BlockReader::open(path)?;
    let mut walker = ClockWalker::new(n);
    let mut sends: BTreeMap<u64, SendMeta> = BTreeMap::new();
    // Per node: its clock jumps (entries in `layout.faults`) still waiting for a step
    // that reads the clock.
    let mut jumps: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut prev_time = 0u64;
    let mut last_input_node: Option<NodeId> = None;
    let mut last_is_end = false;
    let mut offset = reader.offset();
    while let Some(e) = reader.next() {
        if e.index % BLOCK_RECORDS == 0 {
            layout.records = e.index;
            let b = layout.blocks.len() as u64;
            layout.blocks.push(Block {
                offset,
                time_ns: prev_time,
                step_node: last_input_node,
                node_steps: (0..n).map(|k| walker.steps_of(k)).collect(),
            });
            if b.is_multiple_of(layout.clock_every) {
                layout.checkpoints.push(walker.checkpoint());
            }
        }
        offset = reader.offset();
        prev_time = e.time_ns;
        last_is_end = matches!(e.record, Record::End { .. });
        if let Some(node) = e.record.input_node() {
            last_input_node = Some(node);
        }
        let open_before = walker.open_node();
        let entered = walker.feed(&e, &mut |send| match back.step_of(&layout, send)? {
            Some(step) => back.clock_of_step(&layout, step).map(Some),
            None => Ok(None),
        })?;
        if entered.is_some() {
            if let Record::Deliver {
                send: Some(send), ..
            } = &e.record
            {
                take_one(&mut sends, *send);
            }
            continue;
        }
        match &e.record {
            Record::Send { to, .. } => {
                let from = e.node.unwrap_or_default();
                let sender = open_before.map(|k| walker.steps_of(k).saturating_sub(1));
                sends.insert(
                    e.index,
                    SendMeta {
                        from,
                        to: *to,
                        sender,
                        left: 1,
                    },
                );
                while sends.len() > SENDS_MAX {
                    sends.pop_first();
                }
            }
            Record::Duplicate { send } => {
                if let Some(m) = sends.get_mut(send) {
                    m.left = m.left.saturating_add(1);
                }
            }
            Record::Drop { send, reason } => {
                let (from, to, sender) = match sends.get(send) {
                    Some(m) => (m.from, m.to, m.sender),
                    None => read_send(&mut back, &layout, *send)?,
                };
                take_one(&mut sends, *send);
                layout.faults.push(FaultEntry::Drop {
                    record: e.index,
                    from,
                    to,
                    sender,
                    to_steps: walker.steps_of(to.index().min(n - 1)),
                    partition: *reason == DropReason::Partition,
                });
            }
            Record::Fault(FaultRecord::Cut { id, links }) => layout.faults.push(FaultEntry::Cut {
                record: e.index,
                id: *id,
                links: links.clone(),
            }),
            Record::Fault(FaultRecord::Heal { id }) => layout.faults.push(FaultEntry::Heal {
                record: e.index,
                id: *id,
            }),
            Record::Fault(FaultRecord::ClockJump { node, .. }) => {
                jumps[node.index().min(n - 1)].push(layout.faults.len());
                layout.faults.push(FaultEntry::Jump {
                    record: e.index,
                    node: *node,
                    read: None,
                });
            }
            Record::ClockRead { .. } => {
                if let Some(k) = walker.open_node() {
                    let at = walker.steps_of(k).saturating_sub(1);
                    for f in jumps[k].drain(..) {
                        if let Some(FaultEntry::Jump { read, .. }) = layout.faults.get_mut(f) {
                            *read = Some(at);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    layout.records = reader.records_read();
    match reader.tail_error() {
        Some(tail) if tail.is_structural() => {
            return Err(IndexError::Trace(TraceError::Invalid {
                path: path.to_owned(),
                tail: tail.clone(),
            }))
        }
        Some(tail) => layout.tail = Some(tail.to_string()),
        None => layout.complete = last_is_end,
    }
    Ok(layout)
}

fn take_one(sends: &mut BTreeMap<u64, SendMeta>, send: u64) {
    if let Some(m) = sends.get_mut(&send) {
        m.left = m.left.saturating_sub(1);
        if m.left == 0 {
            sends.remove(&send);
        }
    }
}

/// A send's ends and its step's position, read back from the trace.
fn read_send(
    back: &mut BlockReader,
    layout: &Layout,
    send: u64,
) -> Result<(NodeId, NodeId, Option<u32>), IndexError> {
    let e = back.event(layout, send)?;
    let (Some(from), Record::Send { to, .. }) = (e.node, &e.record) else {
        return Err(back.inconsistent(format!("record {send} is not a send")));
    };
    let sender = match back.step_of(layout, send)? {
        Some(step) => Some(
            back.steps_upto(layout, from.index(), step)?
                .saturating_sub(1),
        ),
        None => None,
    };
    Ok((from, *to, sender))
}
