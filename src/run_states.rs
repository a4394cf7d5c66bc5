//! What `retrace run` leaves beside a large trace: its index, with the cluster's state every
//! `STATE_EVERY_RECORDS` records as the simulation had it, so the TUI opens any window of
//! the trace (and `retrace cut` cuts one) by re-executing from the nearest state instead of
//! from the run's start.
//!
//! The index is built while the run writes the trace, on a second thread fed the same bytes
//! (`Tee`), so it costs the run little wall time on a machine with a spare core. The thread
//! starts only once the trace is as large as an index file is worth
//! (`replay_cli::INDEX_FILE_BYTES_MIN`), reading what was written before from the file:
//! a small trace costs no second core and keeps no index.

use crate::replay_cli::{index_file_for, INDEX_FILE_BYTES_MIN};
use crate::summary::group;
use retrace_replayer::index::{
    IndexFile, IndexedTrace, StateCheckpoint, StreamedIndex, STATE_EVERY_RECORDS,
};
use retrace_sim::{Model, RunReport, Scenario, Simulation, TraceSink};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Chunks of trace bytes on their way to the index builder: a bound on the memory they
/// hold (the writer flushes about a megabyte at a time) should the builder fall behind,
/// which then slows the run instead.
const CHUNKS_QUEUED_MAX: usize = 16;

/// Simulates `s` into the trace file at `path`, building its index alongside and taking
/// the cluster's states on the way; then keeps the index with them next to the trace if
/// the trace is large. Returns the run's report and, when an index was written, a line
/// saying so.
pub(crate) fn run_indexed<M: Model>(
    s: &Scenario<M::Options>,
    seed: u64,
    path: &Path,
    file: File,
) -> (RunReport, Option<String>) {
    let builder: Arc<Mutex<Option<Builder>>> = Arc::default();
    let tee = Tee {
        file,
        path: path.to_owned(),
        written: 0,
        to_index: None,
        builder: Arc::clone(&builder),
    };
    let sink = TraceSink::Stream(Box::new(tee));
    let mut states = Vec::new();
    // Dropping the simulation (in `run_observed`) closes the tee: the builder sees the end.
    let report =
        Simulation::<M>::new(s, seed, sink).run_observed(STATE_EVERY_RECORDS, &mut |sim| {
            // A state that does not encode is only a checkpoint fewer: cuts re-execute further.
            let taken = sim.trace_position().and_then(|(at, applied)| {
                let nodes = sim.node_states().ok()?;
                StateCheckpoint::new(at, applied, &nodes).ok()
            });
            states.extend(taken);
        });
    let started = builder.lock().ok().and_then(|mut b| b.take());
    let Some(started) = started else {
        // A small trace: no index was started.
        return (report, None);
    };
    let built = started.join();
    if report.trace_error.is_some() || index_file_for(path) != IndexFile::Write {
        return (report, None);
    }
    let said = match built {
        Ok(Ok(built)) => keep(path, built, states),
        // The trace is whole; its index is only what the first open will build.
        Ok(Err(e)) => format!("index     not written: {e}"),
        Err(_) => "index     not written: its builder stopped".to_string(),
    };
    (report, Some(said))
}

/// The index builder's thread, once started.
type Builder = JoinHandle<Result<StreamedIndex, String>>;

/// Starts the index builder on the trace's first `prefix` bytes, read back from its file,
/// and then whatever comes over `chunks`.
fn spawn_builder(path: PathBuf, prefix: u64, chunks: Receiver<Vec<u8>>) -> io::Result<Builder> {
    // Buffered: the reader asks for a few bytes at a time, a system call each unbuffered.
    let written = io::BufReader::with_capacity(1 << 20, File::open(&path)?.take(prefix));
    Ok(std::thread::spawn(move || {
        let input = written.chain(Chunks {
            from: chunks,
            chunk: Vec::new(),
            at: 0,
        });
        IndexedTrace::index_stream(&path, input).map_err(|e| e.to_string())
    }))
}

fn keep(path: &Path, built: StreamedIndex, states: Vec<StateCheckpoint>) -> String {
    let count = states.len();
    let bytes: usize = states.iter().map(StateCheckpoint::bytes).sum();
    let written = IndexedTrace::from_streamed(path, built)
        .map_err(|e| e.to_string())
        .and_then(|mut indexed| {
            indexed.add_states(states);
            indexed.write_file().map_err(|e| e.to_string())?;
            Ok(indexed.len())
        });
    match written {
        Ok(records) => format!(
            "index     {}.idx: {} records, {count} cluster states ({} KiB) every {} records",
            path.display(),
            group(records),
            bytes / 1024,
            group(STATE_EVERY_RECORDS)
        ),
        Err(e) => format!("index     not written: {e}"),
    }
}

/// The trace file, and a copy of every byte written to it for the index builder once the
/// trace is large enough to have one. A builder that has stopped (its error is reported
/// after the run) is no longer fed.
struct Tee {
    file: File,
    path: PathBuf,
    written: u64,
    to_index: Option<SyncSender<Vec<u8>>>,
    /// Where the builder is left for the run to join; `Some` from the moment it starts.
    builder: Arc<Mutex<Option<Builder>>>,
}

impl Tee {
    /// Starts the builder on what the file holds so far; a builder that cannot start
    /// leaves the trace for the first open to index.
    fn start_builder(&mut self) {
        let (to_index, chunks) = sync_channel(CHUNKS_QUEUED_MAX);
        let Ok(started) = spawn_builder(self.path.clone(), self.written, chunks) else {
            return;
        };
        if let Ok(mut slot) = self.builder.lock() {
            *slot = Some(started);
            self.to_index = Some(to_index);
        }
    }
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        let before = self.written;
        self.written += n as u64;
        match &self.to_index {
            // The builder reads blocks back from the file: the bytes are there before it
            // hears of them.
            Some(to_index) => {
                let _ = to_index.send(buf[..n].to_vec());
            }
            // Started once, as the trace crosses the threshold: the bytes so far (these
            // included) are read from the file.
            None if before < INDEX_FILE_BYTES_MIN && self.written >= INDEX_FILE_BYTES_MIN => {
                self.start_builder()
            }
            None => {}
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The builder's side of the tee: the chunks as one stream, ending when the tee is gone.
struct Chunks {
    from: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.from.recv() {
                Ok(chunk) => (self.chunk, self.at) = (chunk, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
