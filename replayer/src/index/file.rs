//! The index file next to a trace (`TRACE.idx`): the [`Layout`] in checksummed frames,
//! with a fingerprint of the trace it was built from, so an index is used only with its
//! own trace. It is read as untrusted input like the trace: every frame is bounded and
//! checked, every count is checked against the others, and anything wrong makes the index
//! unusable (it is then rebuilt), never a panic.

use super::{
    Block, ClockCheckpoint, FaultEntry, IndexError, Layout, StateCheckpoint, BLOCK_RECORDS,
};
use retrace_sim::codec;
use retrace_sim::trace::{frame_into, read_frame, Header};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: [u8; 8] = *b"RTRCIDX\0";
/// 1: blocks of 4,096 records, clock checkpoints, faults with their positions.
/// 2: state checkpoints after the faults.
const VERSION: u16 = 2;
/// Faults per frame.
const FAULTS_PER_FRAME: usize = 1 << 14;
/// Bytes of the trace's start and end the fingerprint covers.
const FINGERPRINT_BYTES: u64 = 64 << 10;

/// Whether opening a trace writes the index it had to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexFile {
    /// Next to the trace, for the next open.
    Write,
    /// Only in memory (small traces: building is quick, and no file appears).
    Memory,
}

/// What identifies a trace file: its length and a checksum of its first and last bytes
/// (a trace is appended to, so a changed trace changes its end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Fingerprint {
    bytes: u64,
    crc: u32,
}

#[derive(Serialize, Deserialize)]
struct Head {
    fingerprint: Fingerprint,
    block_records: u64,
    header: Header,
    records: u64,
    clock_every: u64,
    blocks: u64,
    faults: u64,
    states: u64,
    tail: Option<String>,
    complete: bool,
}

#[derive(Serialize, Deserialize)]
struct BlockFrame {
    block: Block,
    checkpoint: Option<ClockCheckpoint>,
}

pub(crate) fn index_path(trace: &Path) -> PathBuf {
    let mut s = trace.as_os_str().to_owned();
    s.push(".idx");
    PathBuf::from(s)
}

fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let mut f = File::open(path)?;
    let bytes = f.metadata()?.len();
    let mut buf = Vec::new();
    (&mut f).take(FINGERPRINT_BYTES).read_to_end(&mut buf)?;
    f.seek(SeekFrom::Start(bytes.saturating_sub(FINGERPRINT_BYTES)))?;
    f.take(FINGERPRINT_BYTES).read_to_end(&mut buf)?;
    Ok(Fingerprint {
        bytes,
        crc: codec::crc32(&buf),
    })
}

/// Writes the index of `trace` next to it (through a temporary file and a rename, so a
/// crash leaves the old index or the new, never half of one).
pub(crate) fn store(trace: &Path, layout: &Layout) -> std::io::Result<()> {
    let path = index_path(trace);
    let tmp = {
        let mut s = path.as_os_str().to_owned();
        s.push(".tmp");
        PathBuf::from(s)
    };
    let enc = |v: &dyn erased::Encode| -> std::io::Result<Vec<u8>> { v.encode() };
    let mut out = BufWriter::new(File::create(&tmp)?);
    out.write_all(&MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    // One frame each: a frame is bounded (16 MiB), and a checkpoint of a large cluster's
    // states that does not fit is left out (a replay then starts from an earlier one).
    let mut states = Vec::new();
    for state in &layout.states {
        let body = enc(state)?;
        if body.len() as u64 <= retrace_sim::trace::MAX_FRAME_BYTES / 2 {
            states.push(body);
        }
    }
    let head = Head {
        fingerprint: fingerprint(trace)?,
        block_records: BLOCK_RECORDS,
        header: layout.header.clone(),
        records: layout.records,
        clock_every: layout.clock_every,
        blocks: layout.blocks.len() as u64,
        faults: layout.faults.len() as u64,
        states: states.len() as u64,
        tail: layout.tail.clone(),
        complete: layout.complete,
    };
    let mut frame = Vec::new();
    let mut put = |out: &mut BufWriter<File>, body: Vec<u8>| -> std::io::Result<()> {
        frame.clear();
        frame_into(&mut frame, |o| o.extend_from_slice(&body));
        out.write_all(&frame)
    };
    put(&mut out, enc(&head)?)?;
    for (b, block) in layout.blocks.iter().enumerate() {
        let checkpoint = (b as u64)
            .is_multiple_of(layout.clock_every)
            .then(|| {
                layout
                    .checkpoints
                    .get(b / layout.clock_every as usize)
                    .cloned()
            })
            .flatten();
        let frame = BlockFrame {
            block: block.clone(),
            checkpoint,
        };
        put(&mut out, enc(&frame)?)?;
    }
    for chunk in layout.faults.chunks(FAULTS_PER_FRAME) {
        put(&mut out, enc(&chunk.to_vec())?)?;
    }
    for body in states {
        put(&mut out, body)?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, &path)
}

mod erased {
    //! One encoding call for the frames' different types.
    pub trait Encode {
        fn encode(&self) -> std::io::Result<Vec<u8>>;
    }
    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> std::io::Result<Vec<u8>> {
            retrace_sim::codec::encode(self).map_err(|e| std::io::Error::other(e.to_string()))
        }
    }
}

/// The index of `trace` from its file, when there is one that matches the trace and reads
/// whole; `None` otherwise (the caller builds one).
pub(crate) fn load(trace: &Path) -> Result<Option<Layout>, IndexError> {
    let path = index_path(trace);
    let Ok(file) = File::open(&path) else {
        return Ok(None);
    };
    let print = fingerprint(trace).map_err(|error| IndexError::Io {
        path: trace.to_owned(),
        error,
    })?;
    let Some(layout) = read(BufReader::new(file), print) else {
        return Ok(None);
    };
    // The index's copy of the header is what consumers size their arrays by: it must be
    // the trace's own.
    let (header, _) = retrace_sim::trace::TraceReader::open(trace)?;
    Ok((header == layout.header).then_some(layout))
}

fn read(mut r: impl Read, print: Fingerprint) -> Option<Layout> {
    let mut magic = [0u8; 10];
    r.read_exact(&mut magic).ok()?;
    if magic[..8] != MAGIC || u16::from_le_bytes([magic[8], magic[9]]) != VERSION {
        return None;
    }
    let mut body = Vec::new();
    let mut offset = 10;
    let mut frame = |r: &mut dyn Read| -> Option<Vec<u8>> {
        match read_frame(&mut &mut *r, &mut body, &mut offset) {
            Ok(true) => Some(body.clone()),
            _ => None,
        }
    };
    let head: Head = codec::decode(&frame(&mut r)?).ok()?;
    let n = head.header.nodes.len();
    let blocks_expected = head.records.div_ceil(BLOCK_RECORDS);
    if head.fingerprint != print
        || head.block_records != BLOCK_RECORDS
        || head.blocks != blocks_expected
        || n == 0
        || head.clock_every != Layout::clock_every_for(n)
    {
        return None;
    }
    // Bounded by the counts checked against the trace's record count, and each frame by
    // `read_frame`; the vectors grow as frames arrive, not by the counts.
    let mut blocks = Vec::new();
    let mut checkpoints = Vec::new();
    for b in 0..head.blocks {
        let f: BlockFrame = codec::decode(&frame(&mut r)?).ok()?;
        let wants_checkpoint = b.is_multiple_of(head.clock_every);
        if f.block.node_steps.len() != n || wants_checkpoint != f.checkpoint.is_some() {
            return None;
        }
        if let Some(cp) = f.checkpoint {
            if cp.last.len() != n * n
                || cp
                    .in_flight
                    .iter()
                    .any(|(_, c, _)| !c.is_empty() && c.len() != n)
            {
                return None;
            }
            checkpoints.push(cp);
        }
        blocks.push(f.block);
    }
    let mut faults: Vec<FaultEntry> = Vec::new();
    while (faults.len() as u64) < head.faults {
        let chunk: Vec<FaultEntry> = codec::decode(&frame(&mut r)?).ok()?;
        if chunk.is_empty() {
            return None;
        }
        faults.extend(chunk);
    }
    let node_ok = |k: &retrace_sim::NodeId| k.index() < n;
    let faults_ok = faults.len() as u64 == head.faults
        && faults.iter().all(|f| match f {
            FaultEntry::Cut { links, .. } => links.iter().all(|(a, b)| node_ok(a) && node_ok(b)),
            FaultEntry::Heal { .. } => true,
            FaultEntry::Jump { node, .. } => node_ok(node),
            FaultEntry::Drop { from, to, .. } => node_ok(from) && node_ok(to),
        } && f.record() < head.records);
    if !faults_ok {
        return None;
    }
    // Bounded by the count, and each frame by `read_frame`.
    let mut states: Vec<StateCheckpoint> = Vec::new();
    for _ in 0..head.states {
        let body = frame(&mut r)?;
        let state: StateCheckpoint = codec::decode(&body).ok()?;
        let in_order = states.last().is_none_or(|s| s.index < state.index);
        let inside = state.index < head.records && state.offset < print.bytes;
        if !in_order || !inside || state.step_node.is_some_and(|k| k as usize >= n) {
            return None;
        }
        states.push(state);
    }
    Some(Layout {
        header: head.header,
        nodes: n,
        records: head.records,
        clock_every: head.clock_every,
        blocks,
        checkpoints,
        faults,
        states,
        tail: head.tail,
        complete: head.complete,
    })
}
