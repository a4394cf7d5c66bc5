//! Reading an indexed trace: records a block at a time through a small cache, and the
//! positional questions every query asks (which step holds a record, where a node's `j`-th
//! step is, a step's clock).

use super::clocks::ClockWalker;
use super::file::{self, IndexFile};
use super::{IndexError, Layout, StateCheckpoint, BLOCK_RECORDS};
use retrace_sim::trace::{read_records_at, Event, Header, Record, RecordPosition, TraceReader};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Decoded blocks kept at once: about 1 MB each for a kv trace.
const CACHED_BLOCKS: usize = 32;

/// How many checkpoint walks computing one clock may take: a delivery whose sender's clock
/// the walk does not hold (rare: see `clocks.rs`) takes another walk from an earlier
/// checkpoint, which may meet another. Bounds the work, not only the depth, since one walk
/// may start several.
const CLOCK_WALKS_MAX: u32 = 256;

/// One decoded block, and where each node's inputs are in it.
pub(crate) struct CachedBlock {
    pub events: Vec<Event>,
    /// Per node: the offsets in the block of its inputs, in order.
    pub inputs_by_node: Vec<Vec<u32>>,
}

/// Blocks read from the trace file, least recently used evicted first.
pub(crate) struct BlockReader {
    path: PathBuf,
    file: BufReader<File>,
    cache: Vec<(usize, u64, Rc<CachedBlock>)>,
    tick: u64,
    /// Blocks decoded so far (a measure for benchmarks).
    pub decoded: u64,
    /// Checkpoint walks the clock being computed has taken.
    clock_walks: u32,
}

impl BlockReader {
    pub fn open(path: &Path) -> Result<BlockReader, IndexError> {
        let file = File::open(path).map_err(|error| IndexError::Io {
            path: path.to_owned(),
            error,
        })?;
        Ok(BlockReader {
            path: path.to_owned(),
            file: BufReader::with_capacity(64 << 10, file),
            cache: Vec::with_capacity(CACHED_BLOCKS),
            tick: 0,
            decoded: 0,
            clock_walks: 0,
        })
    }

    pub fn inconsistent(&self, what: String) -> IndexError {
        IndexError::Inconsistent {
            path: self.path.clone(),
            what,
        }
    }

    /// Block `b`, decoded (from the cache when it is there).
    pub fn block(&mut self, layout: &Layout, b: usize) -> Result<Rc<CachedBlock>, IndexError> {
        self.tick += 1;
        if let Some(slot) = self.cache.iter_mut().find(|(x, _, _)| *x == b) {
            slot.1 = self.tick;
            return Ok(slot.2.clone());
        }
        let Some(entry) = layout.blocks.get(b) else {
            return Err(self.inconsistent(format!("no block {b}")));
        };
        let at = RecordPosition {
            offset: entry.offset,
            index: b as u64 * BLOCK_RECORDS,
            time_ns: entry.time_ns,
            step_node: entry.step_node,
        };
        let want = layout.block_len(b);
        let mut events = Vec::with_capacity(want);
        read_records_at(&mut self.file, at, want, &mut events)
            .map_err(|e| self.inconsistent(e.to_string()))?;
        if events.len() != want {
            return Err(self.inconsistent(format!(
                "block {b} holds {} records, not {want}",
                events.len()
            )));
        }
        let n = layout.nodes;
        let mut inputs_by_node = vec![Vec::new(); n];
        for (o, e) in events.iter().enumerate() {
            // The pass that built the index validated every record; these are the checks
            // that need no history, made again because the index file may not be that
            // pass's (a forged pair of trace and index): no consumer indexes past its
            // node arrays.
            if let Some(k) = nodes_named(&e.record)
                .into_iter()
                .chain(e.node)
                .find(|k| k.index() >= n)
            {
                return Err(self.inconsistent(format!(
                    "record {} names node {} of {n}",
                    e.index,
                    k.index()
                )));
            }
            if let Some(node) = e.record.input_node() {
                inputs_by_node[node.index()].push(o as u32);
            }
        }
        self.decoded += 1;
        let block = Rc::new(CachedBlock {
            events,
            inputs_by_node,
        });
        if self.cache.len() >= CACHED_BLOCKS {
            if let Some(oldest) = (0..self.cache.len()).min_by_key(|&i| self.cache[i].1) {
                self.cache.swap_remove(oldest);
            }
        }
        self.cache.push((b, self.tick, block.clone()));
        Ok(block)
    }

    pub fn event(&mut self, layout: &Layout, index: u64) -> Result<Event, IndexError> {
        if index >= layout.records {
            return Err(IndexError::NoRecord {
                path: self.path.clone(),
                index,
                records: layout.records,
            });
        }
        let b = Layout::block_of(index);
        let block = self.block(layout, b)?;
        Ok(block.events[(index % BLOCK_RECORDS) as usize].clone())
    }

    /// The step whose input is at or before record `index`, as `Steps::step_at_or_before`.
    pub fn step_at_or_before(
        &mut self,
        layout: &Layout,
        index: u64,
    ) -> Result<Option<u64>, IndexError> {
        let mut b = Layout::block_of(index.min(layout.records.saturating_sub(1)));
        let mut upto = (index % BLOCK_RECORDS) as usize;
        if index >= layout.records {
            upto = BLOCK_RECORDS as usize;
        }
        // Bounded by the blocks before `index`.
        loop {
            let block = self.block(layout, b)?;
            let end = (upto + 1).min(block.events.len());
            if let Some(e) = block.events[..end]
                .iter()
                .rev()
                .find(|e| e.record.input_node().is_some())
            {
                return Ok(Some(e.index));
            }
            if b == 0 {
                return Ok(None);
            }
            b -= 1;
            upto = BLOCK_RECORDS as usize;
        }
    }

    /// The step record `index` belongs to, as `Steps::step_of`: none before the first step
    /// or after a record that closes steps (a fault, a violation, the end).
    pub fn step_of(&mut self, layout: &Layout, index: u64) -> Result<Option<u64>, IndexError> {
        let Some(input) = self.step_at_or_before(layout, index)? else {
            return Ok(None);
        };
        for i in input + 1..=index {
            let e = self.event(layout, i)?;
            if e.record.ends_step() {
                return Ok(None);
            }
        }
        Ok(Some(input))
    }

    /// How many steps node `k` has with inputs at or before record `index`.
    pub fn steps_upto(&mut self, layout: &Layout, k: usize, index: u64) -> Result<u32, IndexError> {
        let b = Layout::block_of(index);
        let base = layout
            .blocks
            .get(b)
            .and_then(|x| x.node_steps.get(k))
            .copied();
        let Some(base) = base else {
            return Err(self.inconsistent(format!("no block {b} or node {k}")));
        };
        let block = self.block(layout, b)?;
        let at = (index % BLOCK_RECORDS) as u32;
        let within = block
            .inputs_by_node
            .get(k)
            .map_or(0, |list| list.partition_point(|&o| o <= at));
        Ok(base.saturating_add(within as u32))
    }

    /// The input index of node `k`'s step at position `j` (0-based), if it has one.
    pub fn nth_step(
        &mut self,
        layout: &Layout,
        k: usize,
        j: u32,
    ) -> Result<Option<u64>, IndexError> {
        // The last block that starts with at most `j` steps of `k` before it.
        let b = layout
            .blocks
            .partition_point(|x| x.node_steps.get(k).is_some_and(|&c| c <= j));
        let Some(b) = b.checked_sub(1) else {
            return Ok(None);
        };
        // The step is in block `b` or, when `b` holds fewer, in no block (none follow
        // with a count at or below `j`).
        // Counts that do not grow (only a damaged index has them) find nothing here.
        let Some(within) = layout.blocks[b]
            .node_steps
            .get(k)
            .and_then(|&base| j.checked_sub(base))
        else {
            return Ok(None);
        };
        let block = self.block(layout, b)?;
        Ok(block
            .inputs_by_node
            .get(k)
            .and_then(|list| list.get(within as usize))
            .map(|&o| b as u64 * BLOCK_RECORDS + u64::from(o)))
    }

    /// The vector clock of the step whose input is record `input`.
    pub fn clock_of_step(&mut self, layout: &Layout, input: u64) -> Result<Vec<u32>, IndexError> {
        self.clock_walks = 0;
        self.clock_at(layout, input)
    }

    fn clock_at(&mut self, layout: &Layout, input: u64) -> Result<Vec<u32>, IndexError> {
        self.clock_walks += 1;
        if self.clock_walks > CLOCK_WALKS_MAX {
            return Err(self.inconsistent(format!(
                "the clock of record {input} needs more than {CLOCK_WALKS_MAX} checkpoint walks"
            )));
        }
        let n = layout.nodes;
        let b = Layout::block_of(input);
        let c = b as u64 / layout.clock_every;
        let Some(cp) = layout.checkpoints.get(c as usize) else {
            return Err(self.inconsistent(format!("no clock checkpoint for record {input}")));
        };
        let mut walker = ClockWalker::from_checkpoint(n, cp);
        let first_block = (c * layout.clock_every) as usize;
        for bb in first_block..=b {
            let block = self.block(layout, bb)?;
            for e in &block.events {
                if e.index > input {
                    break;
                }
                let entered = walker.feed(e, &mut |send| match self.step_of(layout, send)? {
                    Some(step) => self.clock_at(layout, step).map(Some),
                    None => Ok(None),
                })?;
                if e.index == input {
                    let Some(entered) = entered else {
                        return Err(self.inconsistent(format!("record {input} is not an input")));
                    };
                    return Ok(walker.clock_of(entered.node).to_vec());
                }
            }
        }
        Err(self.inconsistent(format!("record {input} was not reached")))
    }
}

/// Every node a record names besides its step's: its input node, a delivery's sender, a
/// send's destination, a cut's links, a clock jump's node.
fn nodes_named(r: &Record) -> Vec<retrace_sim::NodeId> {
    use retrace_sim::trace::FaultRecord;
    let mut out: Vec<retrace_sim::NodeId> = r.input_node().into_iter().collect();
    match r {
        Record::Deliver { from, .. } => out.push(*from),
        Record::Send { to, .. } => out.push(*to),
        Record::Fault(FaultRecord::Cut { links, .. }) => {
            out.extend(links.iter().flat_map(|(a, b)| [*a, *b]))
        }
        Record::Fault(FaultRecord::ClockJump { node, .. }) => out.push(*node),
        _ => {}
    }
    out
}

/// An index built from a trace's bytes as they were written ([`IndexedTrace::index_stream`]).
pub struct StreamedIndex(Layout);

/// A trace opened through its index: records on demand, never all at once.
pub struct IndexedTrace {
    pub(crate) layout: Layout,
    pub(crate) reader: BlockReader,
    /// Whether the index was built now (the trace's first open) or read from its file.
    pub built: bool,
    path: PathBuf,
    keep: IndexFile,
}

impl IndexedTrace {
    /// Opens `path`, reading its index file when one matches it and building the index
    /// otherwise (one validating pass); `keep` says whether to write a built index next
    /// to the trace.
    pub fn open(path: &Path, keep: IndexFile) -> Result<IndexedTrace, IndexError> {
        let (layout, built) = match file::load(path)? {
            Some(layout) => (layout, false),
            None => {
                let layout = super::build::build(path)?;
                if keep == IndexFile::Write {
                    // An index that cannot be written (a read-only directory) costs only
                    // the next open's time.
                    let _ = file::store(path, &layout);
                }
                (layout, true)
            }
        };
        Ok(IndexedTrace {
            reader: BlockReader::open(path)?,
            layout,
            built,
            path: path.to_owned(),
            keep,
        })
    }

    /// Indexes the trace being written at `path` from `input`, the same bytes as they are
    /// written: a run tees them, so the index is built alongside it on another thread
    /// instead of by a pass after it. [`IndexedTrace::from_streamed`] opens the result once
    /// the trace is whole; the index stays in memory until [`IndexedTrace::write_file`].
    pub fn index_stream(path: &Path, input: impl Read) -> Result<StreamedIndex, IndexError> {
        let reader = TraceReader::new(input, path)?;
        super::build::build_from(path, reader).map(StreamedIndex)
    }

    /// Opens the trace at `path`, whole now, with the index built from its bytes.
    pub fn from_streamed(path: &Path, built: StreamedIndex) -> Result<IndexedTrace, IndexError> {
        Ok(IndexedTrace {
            reader: BlockReader::open(path)?,
            layout: built.0,
            built: true,
            path: path.to_owned(),
            keep: IndexFile::Memory,
        })
    }

    /// Keeps the index in its file next to the trace from now on (and writes it now).
    pub fn write_file(&mut self) -> std::io::Result<()> {
        self.keep = IndexFile::Write;
        file::store(&self.path, &self.layout)
    }

    /// The latest state checkpoint at or before record `index`.
    pub(crate) fn state_at_or_before(&self, index: u64) -> Option<&StateCheckpoint> {
        let states = &self.layout.states;
        states[..states.partition_point(|s| s.index <= index)].last()
    }

    /// State checkpoints taken at step boundaries of this trace, kept with the index (and
    /// in its file, when the index has one).
    pub fn add_states(&mut self, new: Vec<StateCheckpoint>) {
        if new.is_empty() {
            return;
        }
        self.remember_states(new);
        if self.keep == IndexFile::Write {
            // Only a later cut's time is lost if the file cannot be written.
            let _ = file::store(&self.path, &self.layout);
        }
    }

    /// State checkpoints kept for this process only: the index file is not rewritten (it
    /// is rewritten whole, tens of megabytes for a 100 M-record trace).
    pub fn remember_states(&mut self, new: Vec<StateCheckpoint>) {
        let states = &mut self.layout.states;
        states.extend(new);
        states.sort_by_key(|s| s.index);
        states.dedup_by_key(|s| s.index);
    }

    /// How many state checkpoints the index holds.
    pub fn state_checkpoints(&self) -> usize {
        self.layout.states.len()
    }

    pub fn header(&self) -> &Header {
        &self.layout.header
    }

    /// How many valid records the trace has.
    pub fn len(&self) -> u64 {
        self.layout.records
    }

    pub fn is_empty(&self) -> bool {
        self.layout.records == 0
    }

    /// What stopped reading before the end of the file, if anything.
    pub fn tail(&self) -> Option<&str> {
        self.layout.tail.as_deref()
    }

    /// Whether the trace ends with its end record.
    pub fn is_complete(&self) -> bool {
        self.layout.complete
    }

    /// Record `index`.
    pub fn event(&mut self, index: u64) -> Result<Event, IndexError> {
        self.reader.event(&self.layout, index)
    }

    /// Records `from..to` (bounded by the trace), a block at a time.
    pub fn events(&mut self, from: u64, to: u64, out: &mut Vec<Event>) -> Result<(), IndexError> {
        out.clear();
        let to = to.min(self.layout.records);
        let mut i = from;
        while i < to {
            let b = Layout::block_of(i);
            let block = self.reader.block(&self.layout, b)?;
            let start = (i % BLOCK_RECORDS) as usize;
            let end = ((to - b as u64 * BLOCK_RECORDS) as usize).min(block.events.len());
            out.extend_from_slice(&block.events[start..end]);
            i = b as u64 * BLOCK_RECORDS + end as u64;
            if end <= start {
                break;
            }
        }
        Ok(())
    }

    /// The input of the step at or before record `index`.
    pub fn step_at_or_before(&mut self, index: u64) -> Result<Option<u64>, IndexError> {
        self.reader.step_at_or_before(&self.layout, index)
    }

    /// The vector clock of the step whose input is record `input`.
    pub fn clock_of_step(&mut self, input: u64) -> Result<Vec<u32>, IndexError> {
        self.reader.clock_of_step(&self.layout, input)
    }

    /// Blocks decoded since the trace was opened.
    pub fn blocks_decoded(&self) -> u64 {
        self.reader.decoded
    }
}
