//! A trace opened through an index instead of loaded whole: what lets `why`, `show` and the
//! tools built on them work on traces far larger than memory.
//!
//! One validating pass over the file (`build.rs`) writes down, per block of
//! [`BLOCK_RECORDS`] records, where the block starts and what decoding it needs from before
//! it, how many steps each node had taken, and every `CLOCK_EVERY` blocks the vector clock
//! of each node's last step plus the clocks of the messages then in flight — so the vector
//! clock of any step is a short walk from the checkpoint before it (`clocks.rs`), never a
//! walk from the start. Faults and drops are kept with what `why` needs to judge them
//! against any history without reading their records again. The index is small (about 40
//! bytes per block per node, plus the faults) and is kept next to the trace as
//! `TRACE.idx` (`file.rs`) so later opens read it instead of the trace. Records are then
//! read a block at a time through a bounded cache (`access.rs`); `query.rs` answers `why`
//! and `effects` on it exactly as [`crate::Causality`] does on a loaded trace.

mod access;
mod build;
mod clocks;
mod file;
mod query;

pub use access::{IndexedTrace, StreamedIndex};
pub use file::IndexFile;
pub use query::{Effects, Past};

use retrace_sim::trace::{Header, TraceError};
use retrace_sim::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Records per block: the unit of reading. A block of a kv trace decodes in about 3 ms.
pub const BLOCK_RECORDS: u64 = 4096;

/// Where a block starts and what decoding it needs from before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Block {
    pub offset: u64,
    /// The time of the record before the block.
    pub time_ns: u64,
    /// The node of the step open at the block's start.
    pub step_node: Option<NodeId>,
    /// Per node: its steps before the block.
    pub node_steps: Vec<u32>,
}

/// The causal state at a block's start: the vector clock of each node's last step (`n`
/// entries each, flattened) and of each message in flight (its send record, its sender's
/// clock — empty when the send belongs to no step —, deliveries still to come).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClockCheckpoint {
    pub last: Vec<u32>,
    /// The node of the step records may still join (none after a fault, a violation or
    /// the end closed it) — not the decoder's `step_node`, which outlives the step.
    pub open: Option<u32>,
    pub in_flight: Vec<(u64, Vec<u32>, u32)>,
}

/// A fault or drop, with what judging it against a history needs (see
/// `crate::faults` for the rules).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FaultEntry {
    Cut {
        record: u64,
        id: u32,
        links: Vec<(NodeId, NodeId)>,
    },
    Heal {
        record: u64,
        id: u32,
    },
    /// A clock jump; `read` is the position on `node` of its first step after the jump
    /// that read the clock.
    Jump {
        record: u64,
        node: NodeId,
        read: Option<u32>,
    },
    /// A drop of a message from `from` to `to`; `sender` is the sending step's position on
    /// `from` (none when the send belongs to no step), `to_steps` how many steps `to` had
    /// taken at the drop (so its next step is at that position).
    Drop {
        record: u64,
        from: NodeId,
        to: NodeId,
        sender: Option<u32>,
        to_steps: u32,
        partition: bool,
    },
}

impl FaultEntry {
    pub fn record(&self) -> u64 {
        match self {
            FaultEntry::Cut { record, .. }
            | FaultEntry::Heal { record, .. }
            | FaultEntry::Jump { record, .. }
            | FaultEntry::Drop { record, .. } => *record,
        }
    }
}

/// The whole cluster's state at a step boundary, as a replay that passed it left it (see
/// `crate::window`) or the simulation that wrote the trace took it: a later replay can start
/// there instead of at the trace's start. The nodes are `NodeState`s through the codec,
/// opaque to the index (it has no model).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCheckpoint {
    /// Where the next step's input is, and the decoder's state there.
    pub(crate) offset: u64,
    pub(crate) index: u64,
    pub(crate) time_ns: u64,
    pub(crate) step_node: Option<u32>,
    /// Steps applied before it.
    pub(crate) applied: u64,
    pub(crate) nodes: Vec<u8>,
}

/// How many records apart the state checkpoints a replay or a simulation leaves are. A
/// window is cut by re-executing from the nearest one, so this bounds how long the TUI
/// takes to open or page anywhere in a trace: on a 5-replica kv trace, at most half a
/// second. A state is a few KiB there (the cluster's, not the trace's size), so a 100 M
/// record trace carries 200 of them in about a megabyte of its index.
pub const STATE_EVERY_RECORDS: u64 = 500_000;

impl StateCheckpoint {
    /// The cluster `states` at step boundary `at`, `applied` steps into the trace.
    pub fn new(
        at: retrace_sim::trace::RecordPosition,
        applied: u64,
        states: &[retrace_sim::snapshot::NodeState],
    ) -> Result<StateCheckpoint, retrace_sim::codec::CodecError> {
        Ok(StateCheckpoint {
            offset: at.offset,
            index: at.index,
            time_ns: at.time_ns,
            step_node: at.step_node.map(|n| n.0),
            applied,
            nodes: retrace_sim::codec::encode(states)?,
        })
    }

    /// How large the encoded states are.
    pub fn bytes(&self) -> usize {
        self.nodes.len()
    }

    pub fn position(&self) -> retrace_sim::trace::RecordPosition {
        retrace_sim::trace::RecordPosition {
            offset: self.offset,
            index: self.index,
            time_ns: self.time_ns,
            step_node: self.step_node.map(NodeId),
        }
    }
}

/// Everything an index holds.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub header: Header,
    pub nodes: usize,
    pub records: u64,
    /// A clock checkpoint every this many blocks (1 for small clusters; more when `n²`
    /// clocks per block would make the index large).
    pub clock_every: u64,
    pub blocks: Vec<Block>,
    pub checkpoints: Vec<ClockCheckpoint>,
    pub faults: Vec<FaultEntry>,
    /// State checkpoints replays left, by position (none until a window is cut).
    pub states: Vec<StateCheckpoint>,
    /// What stopped the reading before the end of the file, as the reader said it.
    pub tail: Option<String>,
    /// Whether the trace ends with its end record.
    pub complete: bool,
}

impl Layout {
    /// How many blocks apart clock checkpoints are for a cluster of `nodes`: about 64
    /// clock entries per block at most.
    pub fn clock_every_for(nodes: usize) -> u64 {
        ((nodes * nodes) as u64).div_ceil(64).max(1)
    }

    /// The block holding record `index`.
    pub fn block_of(index: u64) -> usize {
        (index / BLOCK_RECORDS) as usize
    }

    /// How many records block `b` holds.
    pub fn block_len(&self, b: usize) -> usize {
        let start = b as u64 * BLOCK_RECORDS;
        self.records.saturating_sub(start).min(BLOCK_RECORDS) as usize
    }
}

/// Why an indexed trace could not be opened or read.
#[derive(Debug)]
pub enum IndexError {
    /// The trace itself is unreadable or invalid.
    Trace(TraceError),
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A record the index points at is not what it said (the trace changed under the
    /// index, or either was damaged).
    Inconsistent { path: PathBuf, what: String },
    /// No such record.
    NoRecord {
        path: PathBuf,
        index: u64,
        records: u64,
    },
}

impl fmt::Display for IndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexError::Trace(e) => write!(f, "{e}"),
            IndexError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            IndexError::Inconsistent { path, what } => write!(
                f,
                "{}: {what} (the trace differs from its index; delete {}.idx to rebuild it)",
                path.display(),
                path.display()
            ),
            IndexError::NoRecord {
                path,
                index,
                records,
            } => write!(
                f,
                "{}: no event {index} (the trace has {records})",
                path.display()
            ),
        }
    }
}

impl std::error::Error for IndexError {}

impl From<TraceError> for IndexError {
    fn from(e: TraceError) -> Self {
        IndexError::Trace(e)
    }
}
