//! A node's recording: one log file per node incarnation, in the trace format's framing.
//! The first frame is a [`LogHeader`]; each later frame one [`LogRecord`] (bincode, through
//! the codec). A process killed mid-write leaves at worst a torn last frame.

use crate::policy::{LogPolicy, SnapshotEvery};
use crate::segments;
use crate::wire::MsgId;
use retrace_sim::codec::{self, CodecError};
use retrace_sim::trace::{frame_into, read_frame, NodeInfo, TailError, TailErrorKind};
use retrace_sim::NodeSnapshot;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What a log says about the node that wrote it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHeader {
    pub node: u32,
    pub name: String,
    pub incarnation: u32,
    pub model: String,
    pub scenario_name: String,
    pub scenario_toml: String,
    pub nodes: Vec<NodeInfo>,
    pub fsync: String,
    pub writer: String,
    /// Which segment of the life's log this file is (0: the one the manifest names).
    pub segment: u32,
    /// The index in the life's log of this segment's first record.
    pub first_record: u64,
    /// When the segment was started (ns since the Unix epoch): `capture` picks segments
    /// by it, reading headers only.
    pub started_wall_ns: u64,
}

/// Measured times of one step, in microseconds (small varints; the profiler needs no more):
/// how long its input waited for the node, and how long its handler ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    pub queued_us: u64,
    pub busy_us: u64,
}

/// One thing that crossed the node's boundary. Inputs carry wall-clock time (ns since the
/// Unix epoch; in the file, as the difference from the previous timed record); outputs and
/// clock readings belong to the input before them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogRecord {
    /// The node booted with this random seed; on a restart, `storage` is the durable state
    /// it found (the OS decided which writes survived, so it is an input).
    Start {
        wall_ns: u64,
        seed: u64,
        restart: bool,
        storage: Vec<(String, Vec<u8>)>,
    },
    Deliver {
        wall_ns: u64,
        id: MsgId,
        sender_event: u64,
        lamport: u64,
        request_ids: Vec<u64>,
        payload: Vec<u8>,
        timing: Timing,
    },
    Timer {
        wall_ns: u64,
        timer: u64,
        /// The node's timer value, encoded (`retrace_sim::Tag`).
        tag: Vec<u8>,
        request_ids: Vec<u64>,
        timing: Timing,
    },
    External {
        wall_ns: u64,
        request: u64,
        payload: Vec<u8>,
        timing: Timing,
    },
    ClockRead {
        value_ns: u64,
    },
    /// Output: message number `seq` of this node incarnation (its id is
    /// `MsgId { node, incarnation, seq }` from the header) to node `to`.
    Send {
        to: u32,
        seq: u64,
        digest: u64,
    },
    TimerSet {
        timer: u64,
        tag: Vec<u8>,
        after_ns: u64,
    },
    TimerCancel {
        timer: u64,
    },
    Annotate {
        text: String,
    },
    /// A `tracing` event the handler emitted (`retrace_sim::logs`).
    Log {
        level: u8,
        target: String,
        text: String,
    },
    Respond {
        request: u64,
        digest: u64,
    },
    /// Recording stopped early (a write failed); what follows in time is not recorded.
    Incomplete {
        wall_ns: u64,
        reason: String,
    },
    /// The node shut down cleanly.
    Stop {
        wall_ns: u64,
    },
    /// The node between two steps (taken after the step before it): re-execution can
    /// start here instead of at the boot. Each segment after a life's first starts with one.
    Snapshot {
        wall_ns: u64,
        /// How long taking it held the node up, in microseconds (for `bench record`).
        took_us: u64,
        snapshot: NodeSnapshot,
    },
    /// An operator or a watchdog marked this moment (`retrace mark`, or the mark signal);
    /// between two steps, and no input of the node's.
    Mark {
        wall_ns: u64,
        reason: String,
    },
    /// In an `External` step: the HTTP request that carried it (see `retrace_sim::http`).
    HttpRequest {
        request: u64,
        http: retrace_sim::http::HttpRequest,
    },
    /// Output, after the `Respond` to `request`: the HTTP response its client was sent.
    HttpResponse {
        request: u64,
        http: retrace_sim::http::HttpResponse,
    },
    /// What a `retrace tap` saw on its connection `conn` (a tap's log holds only these).
    Tap {
        wall_ns: u64,
        conn: u64,
        event: retrace_sim::trace::WireEvent,
    },
    /// Input: what happened on service connection `conn` (see `retrace_sim::service`), its
    /// bytes in full; `request_ids` those of the step that last used the connection.
    ServiceIn {
        wall_ns: u64,
        conn: u64,
        request_ids: Vec<u64>,
        event: retrace_sim::ServiceEvent,
        timing: Timing,
    },
    /// Output: what the node did to service connection `conn`, its bytes in full.
    ServiceOut {
        conn: u64,
        op: retrace_sim::ServiceOp,
    },
}

impl LogRecord {
    /// Inputs start a step; everything else belongs to the step before it.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            LogRecord::Start { .. }
                | LogRecord::Deliver { .. }
                | LogRecord::Timer { .. }
                | LogRecord::External { .. }
                | LogRecord::ServiceIn { .. }
        )
    }

    fn wall_mut(&mut self) -> Option<&mut u64> {
        match self {
            LogRecord::Start { wall_ns, .. }
            | LogRecord::Deliver { wall_ns, .. }
            | LogRecord::Timer { wall_ns, .. }
            | LogRecord::External { wall_ns, .. }
            | LogRecord::ServiceIn { wall_ns, .. }
            | LogRecord::Incomplete { wall_ns, .. }
            | LogRecord::Snapshot { wall_ns, .. }
            | LogRecord::Mark { wall_ns, .. }
            | LogRecord::Tap { wall_ns, .. }
            | LogRecord::Stop { wall_ns } => Some(wall_ns),
            _ => None,
        }
    }

    /// The measured timing an input carries.
    pub fn timing_mut(&mut self) -> Option<&mut Timing> {
        match self {
            LogRecord::Deliver { timing, .. }
            | LogRecord::Timer { timing, .. }
            | LogRecord::External { timing, .. }
            | LogRecord::ServiceIn { timing, .. } => Some(timing),
            _ => None,
        }
    }

    pub fn wall_ns(&self) -> Option<u64> {
        match self {
            LogRecord::Start { wall_ns, .. }
            | LogRecord::Deliver { wall_ns, .. }
            | LogRecord::Timer { wall_ns, .. }
            | LogRecord::External { wall_ns, .. }
            | LogRecord::ServiceIn { wall_ns, .. }
            | LogRecord::Incomplete { wall_ns, .. }
            | LogRecord::Snapshot { wall_ns, .. }
            | LogRecord::Mark { wall_ns, .. }
            | LogRecord::Tap { wall_ns, .. }
            | LogRecord::Stop { wall_ns } => Some(*wall_ns),
            _ => None,
        }
    }
}

/// When the log is written and forced to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Every event is written and fsynced before its outputs leave the node: a crash,
    /// even of the machine, loses no record another node may depend on.
    Always,
    /// Group commit: records are written every `interval` (or every 64 KiB) and fsynced by a
    /// background thread; outputs do not wait. A crash loses at most the last `interval`,
    /// whose messages then show up in a merge as coming from a black box.
    Batch { interval: Duration },
    /// Like `Batch`, without the fsync: the OS writes back when it likes.
    Never,
}

impl Fsync {
    pub fn describe(&self) -> String {
        match self {
            Fsync::Always => "always".into(),
            Fsync::Batch { interval } => format!("batch ({}ms)", interval.as_millis()),
            Fsync::Never => "never".into(),
        }
    }
}

/// Recording failed and `--record-strict` makes that fatal.
#[derive(Debug)]
pub struct RecordError(pub String);

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RecordError {}

impl From<String> for RecordError {
    fn from(message: String) -> Self {
        RecordError(message)
    }
}

impl From<&str> for RecordError {
    fn from(message: &str) -> Self {
        RecordError(message.to_string())
    }
}

/// Writes larger than this go out at once, whatever the policy.
const WRITE_BATCH_BYTES: usize = 64 << 10;
/// How often `Never` hands its records to the OS.
const NEVER_WRITE_INTERVAL: Duration = Duration::from_millis(5);

/// The group-commit thread of `Fsync::Batch`: it fsyncs the log file while the node runs.
struct Syncer {
    dirty: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    error: Arc<Mutex<Option<String>>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(file: File, interval: Duration) -> Syncer {
        let dirty = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let (d, s, e) = (dirty.clone(), stop.clone(), error.clone());
        let handle = thread::Builder::new()
            .name("log-sync".into())
            .spawn(move || loop {
                thread::sleep(interval);
                if d.swap(false, Ordering::AcqRel) {
                    if let Err(err) = file.sync_data() {
                        if let Ok(mut slot) = e.lock() {
                            *slot = Some(err.to_string());
                        }
                        return;
                    }
                }
                if s.load(Ordering::Acquire) {
                    return;
                }
            })
            .ok();
        Syncer {
            dirty,
            stop,
            error,
            handle,
        }
    }

    fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    /// Lets the thread make its last sync and end on its own (a closed segment's).
    fn detach(mut self) {
        self.stop.store(true, Ordering::Release);
        self.handle.take();
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Appends records to a node's log. Records accumulate in memory and reach the file on
/// [`LogWriter::commit`] as the [`Fsync`] policy says.
pub struct LogWriter {
    /// The segment being written.
    path: PathBuf,
    /// The life's first segment: the name the manifest knows, which the others extend.
    base: PathBuf,
    header: LogHeader,
    policy: LogPolicy,
    segment: u32,
    /// Bytes of the segment being written that reached its file.
    segment_bytes: u64,
    segment_started: Instant,
    last_snapshot: Instant,
    /// `records` after the last snapshot.
    last_snapshot_record: u64,
    /// Directory syncs and retention, off the event loop (started at the first need).
    housekeeper: Option<segments::Housekeeper>,
    file: Option<File>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    fsync: Fsync,
    last_write: Instant,
    last_wall_ns: u64,
    syncer: Option<Syncer>,
    strict: bool,
    records: u64,
    bytes: u64,
    failed: Option<String>,
    /// Writes past this many bytes fail as on a full disk: set from
    /// [`INJECT_DISK_FULL_ENV`], for tests on machines where no small filesystem can be
    /// mounted.
    disk_full_after: Option<u64>,
}

/// Refuses a timer tag longer than any node may set (a trace could not hold it).
fn bounded_tag(r: LogRecord) -> Result<LogRecord, CodecError> {
    match &r {
        LogRecord::Timer { tag, .. } | LogRecord::TimerSet { tag, .. }
            if tag.len() > retrace_sim::tag::TAG_BYTES_MAX =>
        {
            Err(CodecError("timer tag longer than a timer may carry".into()))
        }
        _ => Ok(r),
    }
}

/// The first bytes of a node's log: not a trace's (`RETRACE\0`), so neither is taken for
/// the other.
pub const LOG_MAGIC: [u8; 8] = *b"RTRCLOG\0";
/// The log format this build writes and reads. 2: a timer's tag is the node's typed timer
/// value, encoded. 3: segments (the header's number and first record) and snapshots.
pub const LOG_FORMAT_VERSION: u16 = 3;

/// An environment variable that makes a node's log behave as if its disk filled after
/// that many bytes (tests only: where a real small tmpfs cannot be mounted).
pub const INJECT_DISK_FULL_ENV: &str = "RETRACE_INJECT_DISK_FULL_AFTER_BYTES";

impl LogWriter {
    /// Creates the log and writes its header. An unwritable log is an error only when
    /// `strict`; otherwise the node runs unrecorded (with a warning).
    pub fn create(
        path: &Path,
        header: &LogHeader,
        fsync: Fsync,
        strict: bool,
    ) -> Result<Self, RecordError> {
        let mut header = header.clone();
        header.segment = 0;
        header.first_record = 0;
        header.started_wall_ns = wall_now_ns();
        let mut w = LogWriter::unopened(path, header, fsync, strict);
        w.buf.reserve(WRITE_BATCH_BYTES + 4096);
        w.disk_full_after = std::env::var(INJECT_DISK_FULL_ENV)
            .ok()
            .and_then(|v| v.parse().ok());
        match OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
        {
            Ok(f) => {
                if let (Fsync::Batch { interval }, Ok(clone)) = (fsync, f.try_clone()) {
                    w.syncer = Some(Syncer::start(clone, interval));
                }
                w.file = Some(f);
            }
            Err(e) => w.fail(format!("cannot create {}: {e}", path.display()))?,
        }
        segment_start(&w.header, &mut w.buf)?;
        w.write_out()?;
        Ok(w)
    }

    /// Cuts the log into segments, keeps what `policy` says and snapshots as often, from now
    /// on. A restarted node's older lives count towards what is kept: retention runs once
    /// here as well.
    pub fn with_policy(mut self, policy: LogPolicy) -> Self {
        self.policy = policy;
        if policy.retain != crate::policy::Retain::All && self.file.is_some() {
            self.retire();
        }
        self
    }

    /// Whether the node is due a snapshot after the step just ended: its interval has
    /// passed, or its segment is full or old (the next segment starts with one).
    pub fn snapshot_due(&self) -> bool {
        if self.file.is_none() {
            return false;
        }
        self.rotation_due()
            || match self.policy.snapshot_every {
                SnapshotEvery::Time(every) => self.last_snapshot.elapsed() >= every,
                SnapshotEvery::Records(n) => self.records - self.last_snapshot_record >= n,
                SnapshotEvery::Never => false,
            }
    }

    fn rotation_due(&self) -> bool {
        self.file.is_some()
            && (self.segment_bytes + self.buf.len() as u64 >= self.policy.segment_bytes_max
                || self.segment_started.elapsed() >= self.policy.segment_age_max)
    }

    /// Records a snapshot of the node, taken between two steps: as the first record of a
    /// new segment if the current one is full or old, else in the current one.
    pub fn snapshot(&mut self, snapshot: NodeSnapshot, took: Duration) -> Result<(), RecordError> {
        self.last_snapshot = Instant::now();
        let record = LogRecord::Snapshot {
            wall_ns: wall_now_ns(),
            took_us: took.as_micros() as u64,
            snapshot,
        };
        if self.rotation_due() {
            return self.rotate(record);
        }
        // Records are plain data: encoding cannot fail.
        let _ = self.append(record);
        self.last_snapshot_record = self.records;
        Ok(())
    }

    /// Closes the segment being written and starts the next with `snapshot`.
    ///
    /// Crash safety without stalling the node: the closed segment's last records reach the
    /// file first, and the new segment is created with its header and snapshot in one
    /// write, so a kill at any moment leaves consecutive segments of which only the last
    /// can be cut (or, killed inside that one write, have a torn header: readers leave such
    /// a last segment out). The syncs follow the policy: under `always` the new segment and
    /// its directory entry are synced before the node goes on; under `batch` the closed
    /// segment's last sync, the directory sync and retention run off the event loop.
    fn rotate(&mut self, snapshot: LogRecord) -> Result<(), RecordError> {
        self.write_out()?;
        if self.file.is_none() {
            return Ok(());
        }
        let segment = self.segment + 1;
        let path = segments::segment_path(&self.base, segment);
        let mut header = self.header.clone();
        header.segment = segment;
        header.first_record = self.records;
        header.started_wall_ns = wall_now_ns();
        // The new segment's bytes, built in `buf` (empty after `write_out`) so that
        // `append` frames the snapshot with its time relative to the segment's start.
        segment_start(&header, &mut self.buf)?;
        self.last_wall_ns = 0;
        let _ = self.append(snapshot);
        let bytes = std::mem::take(&mut self.buf);
        let disk_full = self
            .disk_full_after
            .is_some_and(|max| self.bytes + bytes.len() as u64 > max);
        let always = matches!(self.fsync, Fsync::Always);
        let dir = self.base.parent().map(Path::to_owned);
        let written = (|| -> std::io::Result<File> {
            if disk_full {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            let mut f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)?;
            f.write_all(&bytes)?;
            if always {
                f.sync_data()?;
                if let Some(dir) = &dir {
                    File::open(dir)?.sync_all()?;
                }
            }
            Ok(f)
        })();
        let file = match written {
            Ok(f) => f,
            Err(e) => {
                // A partial segment would read as a torn one; none is clearer.
                let _ = std::fs::remove_file(&path);
                return self.fail(format!("starting segment {}: {e}", path.display()));
            }
        };
        // The closed segment's syncer makes its last sync on its own and ends.
        if let Some(s) = self.syncer.take() {
            s.detach();
        }
        if let (Fsync::Batch { interval }, Ok(clone)) = (self.fsync, file.try_clone()) {
            self.syncer = Some(Syncer::start(clone, interval));
        }
        let housekeeper = self.housekeeper.get_or_insert_with(Default::default);
        if let (Fsync::Batch { .. }, Some(dir)) = (self.fsync, &dir) {
            housekeeper.submit(segments::Job::SyncDir(dir.clone()));
        }
        self.file = Some(file);
        self.path = path;
        self.segment = segment;
        self.segment_bytes = bytes.len() as u64;
        self.bytes += bytes.len() as u64;
        self.segment_started = Instant::now();
        self.last_write = self.segment_started;
        self.last_snapshot_record = self.records;
        self.buf = bytes;
        self.buf.clear();
        self.retire();
        Ok(())
    }

    /// Deletes the node's oldest segments past what the policy keeps, off the event loop.
    fn retire(&mut self) {
        let Some(dir) = self.base.parent() else {
            return;
        };
        let job = segments::Job::Retire {
            dir: dir.to_owned(),
            name: self.header.name.clone(),
            current: self.path.clone(),
            retain: self.policy.retain,
            reserve_bytes: self
                .policy
                .segment_bytes_max
                .saturating_sub(self.segment_bytes),
        };
        self.housekeeper
            .get_or_insert_with(Default::default)
            .submit(job);
    }

    /// Marks this moment, between two steps: a record in the log, and a line in the node's
    /// marks file beside it (so `capture` finds marks without reading logs). The reason is
    /// cut to [`MARK_REASON_BYTES_MAX`].
    pub fn mark(&mut self, reason: &str) -> Result<Mark, RecordError> {
        let mut end = reason.len().min(MARK_REASON_BYTES_MAX);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mark = Mark {
            wall_ns: wall_now_ns(),
            node: self.header.name.clone(),
            incarnation: self.header.incarnation,
            reason: reason[..end].to_string(),
        };
        let _ = self.append(LogRecord::Mark {
            wall_ns: mark.wall_ns,
            reason: mark.reason.clone(),
        });
        // The mark is an operator's request to keep this moment: it reaches the disk now.
        self.write_out()?;
        if let Some(dir) = self.base.parent() {
            let line = serde_json::to_string(&mark).unwrap_or_default();
            let written = OpenOptions::new()
                .create(true)
                .append(true)
                .open(marks_file(dir, &self.header.name))
                .and_then(|mut f| {
                    f.write_all(format!("{line}\n").as_bytes())?;
                    f.sync_data()
                });
            if let Err(e) = written {
                crate::diag::warn(format_args!(
                    "warning: [{}] writing the marks file: {e} (the mark is in the log)",
                    self.header.name
                ));
            }
        }
        Ok(mark)
    }

    /// Which segment is being written, and what retention deleted in this life.
    pub fn segments(&self) -> (u32, segments::Retired) {
        let retired = self
            .housekeeper
            .as_ref()
            .map(segments::Housekeeper::retired)
            .unwrap_or_default();
        (self.segment, retired)
    }

    /// A writer that records nothing (recording switched off).
    pub fn disabled() -> Self {
        let mut w = LogWriter::unopened(Path::new(""), LogHeader::default(), Fsync::Never, false);
        w.failed = Some("recording is off".into());
        w
    }

    /// A writer with no file yet.
    fn unopened(path: &Path, header: LogHeader, fsync: Fsync, strict: bool) -> Self {
        let now = Instant::now();
        LogWriter {
            path: path.to_owned(),
            base: path.to_owned(),
            header,
            policy: LogPolicy::default(),
            segment: 0,
            segment_bytes: 0,
            segment_started: now,
            last_snapshot: now,
            last_snapshot_record: 0,
            housekeeper: None,
            file: None,
            buf: Vec::new(),
            scratch: Vec::with_capacity(256),
            fsync,
            last_write: now,
            last_wall_ns: 0,
            syncer: None,
            strict,
            records: 0,
            bytes: 0,
            failed: None,
            disk_full_after: None,
        }
    }

    /// Whether records are still being kept.
    pub fn recording(&self) -> bool {
        self.failed.is_none()
    }

    /// Index the next record will get (records counted from 0, header excluded).
    pub fn next_index(&self) -> u64 {
        self.records
    }

    pub fn bytes(&self) -> u64 {
        self.bytes + self.buf.len() as u64
    }

    fn fail(&mut self, reason: String) -> Result<(), RecordError> {
        if self.strict {
            return Err(RecordError(format!("recording failed: {reason}")));
        }
        if self.failed.is_none() {
            crate::diag::warn(format_args!(
                "warning: {reason}; recording stops, the node keeps running (the log is marked incomplete)"
            ));
            crate::diag::status(&crate::diag::Status::RecordingStopped {
                log: self.path.display().to_string(),
                reason: reason.clone(),
            });
            // Best effort, as the disk may be full: a marker beside the log, and a last
            // record in it (the launcher also notes it in the manifest).
            let _ = std::fs::write(incomplete_marker(&self.path), reason.as_bytes());
            if let Some(f) = self.file.as_mut() {
                let mut last = Vec::new();
                let mut rec = LogRecord::Incomplete {
                    wall_ns: wall_now_ns(),
                    reason: reason.clone(),
                };
                if let Some(w) = rec.wall_mut() {
                    *w = w.wrapping_sub(self.last_wall_ns);
                }
                if let Ok(body) = codec::encode(&rec) {
                    frame_into(&mut last, |o| o.extend_from_slice(&body));
                    let _ = f.write_all(&last);
                }
            }
            self.failed = Some(reason);
        }
        self.file = None;
        if let Some(mut s) = self.syncer.take() {
            s.finish();
        }
        self.buf.clear();
        Ok(())
    }

    /// Appends a record (in memory until the next commit).
    pub fn append(&mut self, mut record: LogRecord) -> Result<(), CodecError> {
        self.records += 1;
        if self.failed.is_some() {
            return Ok(());
        }
        if let Some(wall) = record.wall_mut() {
            let absolute = *wall;
            *wall = absolute.wrapping_sub(self.last_wall_ns);
            self.last_wall_ns = absolute;
        }
        self.scratch.clear();
        codec::encode_into(&record, &mut self.scratch)?;
        let body = &self.scratch;
        frame_into(&mut self.buf, |o| o.extend_from_slice(body));
        Ok(())
    }

    fn write_out(&mut self) -> Result<(), RecordError> {
        let Some(file) = self.file.as_mut() else {
            self.buf.clear();
            return Ok(());
        };
        if !self.buf.is_empty() {
            let written = match self.disk_full_after {
                Some(max) if self.bytes + self.buf.len() as u64 > max => {
                    // As a full disk does: part of the write lands, then ENOSPC.
                    let fits = max.saturating_sub(self.bytes) as usize;
                    let _ = file.write_all(&self.buf[..fits]);
                    Err(std::io::Error::from_raw_os_error(28))
                }
                _ => file.write_all(&self.buf),
            };
            if let Err(e) = written {
                return self.fail(format!("writing {}: {e}", self.path.display()));
            }
            self.bytes += self.buf.len() as u64;
            self.segment_bytes += self.buf.len() as u64;
            self.buf.clear();
            if let Some(s) = &self.syncer {
                s.dirty.store(true, Ordering::Release);
            }
        }
        self.last_write = Instant::now();
        Ok(())
    }

    /// Called after every event, before its outputs are released.
    pub fn commit(&mut self) -> Result<(), RecordError> {
        if let Some(err) = self.syncer.as_ref().and_then(Syncer::error) {
            return self.fail(format!("syncing {}: {err}", self.path.display()));
        }
        let interval = match self.fsync {
            Fsync::Always => {
                self.write_out()?;
                if let Some(file) = self.file.as_mut() {
                    if let Err(e) = file.sync_data() {
                        return self.fail(format!("syncing {}: {e}", self.path.display()));
                    }
                }
                return Ok(());
            }
            Fsync::Batch { interval } => interval,
            Fsync::Never => NEVER_WRITE_INTERVAL,
        };
        if self.buf.len() >= WRITE_BATCH_BYTES || self.last_write.elapsed() >= interval {
            self.write_out()?;
        }
        Ok(())
    }

    /// Writes (and for `Always` and `Batch`, fsyncs) everything now: at a clean stop.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.write_out()?;
        if !matches!(self.fsync, Fsync::Never) {
            if let Some(file) = self.file.as_mut() {
                if let Err(e) = file.sync_data() {
                    return self.fail(format!("syncing {}: {e}", self.path.display()));
                }
            }
        }
        if let Some(mut s) = self.syncer.take() {
            s.finish();
        }
        // Retention's last deletions done; what it did stays readable (`segments`).
        if let Some(h) = self.housekeeper.as_mut() {
            h.finish();
        }
        Ok(())
    }

    /// Time until buffered records are due to be written, for the event loop's wait.
    pub fn next_write_in(&self) -> Option<Duration> {
        let interval = match self.fsync {
            Fsync::Always => return None,
            Fsync::Batch { interval } => interval,
            Fsync::Never => NEVER_WRITE_INTERVAL,
        };
        (self.file.is_some() && !self.buf.is_empty())
            .then(|| interval.saturating_sub(self.last_write.elapsed()))
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if let Some(mut s) = self.syncer.take() {
            s.finish();
        }
    }
}

/// The longest reason a mark keeps.
pub const MARK_REASON_BYTES_MAX: usize = 1024;

/// A marked moment, as the marks file beside the logs lists it (one JSON object a line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub wall_ns: u64,
    pub node: String,
    pub incarnation: u32,
    pub reason: String,
}

/// The file beside a node's logs that lists its marks.
pub fn marks_file(dir: &Path, node_name: &str) -> PathBuf {
    dir.join(format!("{node_name}.marks"))
}

/// The first bytes of a segment: the magic, the format version and the header frame.
fn segment_start(header: &LogHeader, out: &mut Vec<u8>) -> Result<(), RecordError> {
    let body = codec::encode(header).map_err(|e| RecordError(e.to_string()))?;
    out.extend_from_slice(&LOG_MAGIC);
    out.extend_from_slice(&LOG_FORMAT_VERSION.to_le_bytes());
    frame_into(out, |o| o.extend_from_slice(&body));
    Ok(())
}

/// Wall-clock time in nanoseconds since the Unix epoch.
pub fn wall_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The file beside a log that says why its recording stopped, when the log itself had no
/// room for its `Incomplete` record.
pub fn incomplete_marker(log: &Path) -> PathBuf {
    log.with_extension("incomplete")
}

/// A log read back: its header, the records of its complete steps, and where and why it
/// was cut if it was.
#[derive(Debug)]
pub struct Log {
    pub path: PathBuf,
    pub header: LogHeader,
    /// Every record of every complete step. A cut log loses its last step whole (see
    /// [`LogCut`]), so a reader never sees a step with some of its outputs missing.
    pub records: Vec<LogRecord>,
    pub cut: Option<LogCut>,
}

/// Where a log stops early, and why: a torn or corrupt frame, or a recording that stopped
/// itself (its disk filled). The records after the last step boundary before the cut are
/// left out: which of that step's outputs reached the file is not known, and re-executing
/// a step against a partial record of it would report outputs that were made but never
/// written as mismatches.
#[derive(Debug, Clone)]
pub struct LogCut {
    /// The first bad frame, if reading stopped on one.
    pub tail: Option<TailError>,
    /// Why the recording stopped itself (its `Incomplete` record or the marker beside it).
    pub stopped: Option<String>,
    /// Bytes of the file from the first bad frame to its end.
    pub unreadable_bytes: u64,
    /// Valid records left out because their step may be incomplete.
    pub dropped_records: usize,
    /// Later segments of the life left out because this one is cut (see `segments`).
    pub dropped_segments: usize,
}

impl LogCut {
    /// Whether the cut is what a crash or a full disk leaves, rather than corruption: a
    /// recording that stopped itself, or one frame torn at the very end of the file.
    pub fn is_expected(&self) -> bool {
        match &self.tail {
            _ if self.stopped.is_some() => true,
            None => true,
            Some(t) => matches!(t.kind, TailErrorKind::Torn { .. }),
        }
    }
}

impl std::fmt::Display for LogCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tail {
            Some(t) => write!(f, "cut at {t} ({} bytes unreadable)", self.unreadable_bytes)?,
            None => f.write_str("cut short")?,
        }
        if let Some(reason) = &self.stopped {
            write!(f, "; recording stopped: {reason}")?;
        }
        if self.dropped_records > 0 {
            write!(
                f,
                "; the last step's {} records are left out, as it may be incomplete",
                self.dropped_records
            )?;
        }
        if self.dropped_segments > 0 {
            write!(
                f,
                "; {} later segment(s) are left out, as they follow a cut",
                self.dropped_segments
            )?;
        }
        Ok(())
    }
}

impl Log {
    /// Whether the node stopped cleanly with its recording intact.
    pub fn is_complete(&self) -> bool {
        self.cut.is_none() && matches!(self.records.last(), Some(LogRecord::Stop { .. }))
    }

    /// Why recording stopped early on its own (a failed write), if it did.
    pub fn gave_up(&self) -> Option<&str> {
        self.cut.as_ref().and_then(|c| c.stopped.as_deref())
    }
}

/// Why a log could not be read at all.
#[derive(Debug)]
pub struct LogError(pub String);

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads only a log's header (what `capture` needs to pick segments).
pub fn read_log_header(path: &Path) -> Result<LogHeader, LogError> {
    let file = File::open(path).map_err(|e| LogError(format!("{}: {e}", path.display())))?;
    let mut input = BufReader::with_capacity(64 << 10, file);
    read_header(&mut input, path).map(|(header, _)| header)
}

/// Reads a log: every valid record, stopping at the first bad frame.
pub fn read_log(path: &Path) -> Result<Log, LogError> {
    let file = File::open(path).map_err(|e| LogError(format!("{}: {e}", path.display())))?;
    let size = file.metadata().map_or(0, |m| m.len());
    read_log_from(BufReader::with_capacity(1 << 20, file), size, path)
}

/// Reads and checks a log's magic bytes, format version and header; returns the header and
/// the offset after it.
fn read_header(input: &mut impl std::io::Read, path: &Path) -> Result<(LogHeader, u64), LogError> {
    let mut magic = [0u8; 10];
    std::io::Read::read_exact(input, &mut magic)
        .map_err(|_| LogError(format!("{}: not a retrace log (too short)", path.display())))?;
    if magic[..8] == retrace_sim::trace::MAGIC {
        return Err(LogError(format!(
            "{}: a retrace trace, not a node's log (`retrace show` or `replay` open traces)",
            path.display()
        )));
    }
    if magic[..8] != LOG_MAGIC {
        return Err(LogError(format!(
            "{}: not a retrace log (bad magic bytes at offset 0)",
            path.display()
        )));
    }
    let version = u16::from_le_bytes([magic[8], magic[9]]);
    if version != LOG_FORMAT_VERSION {
        return Err(LogError(format!(
            "{}: log format version {version} is not supported (this build reads {LOG_FORMAT_VERSION})",
            path.display()
        )));
    }
    let mut body = Vec::new();
    let mut offset = 10u64;
    let header: LogHeader = match read_frame(input, &mut body, &mut offset) {
        Ok(true) => codec::decode(&body)
            .map_err(|e| LogError(format!("{}: bad log header: {e}", path.display())))?,
        Ok(false) => {
            return Err(LogError(format!(
                "{}: log ends before its header",
                path.display()
            )))
        }
        Err(kind) => {
            let t = TailError {
                offset,
                index: 0,
                kind,
            };
            return Err(LogError(format!("{}: bad log header: {t}", path.display())));
        }
    };
    Ok((header, offset))
}

/// Reads a log of `size` bytes from `input`; `path` names it in errors (and locates the
/// marker beside it).
pub fn read_log_from(
    mut input: impl std::io::Read,
    size: u64,
    path: &Path,
) -> Result<Log, LogError> {
    let (header, mut offset) = read_header(&mut input, path)?;
    let mut body = Vec::new();
    let mut records = Vec::new();
    let mut tail = None;
    let mut last_wall_ns = 0u64;
    loop {
        let start = offset;
        match read_frame(&mut input, &mut body, &mut offset) {
            Ok(false) => break,
            Ok(true) => match codec::decode::<LogRecord>(&body).and_then(bounded_tag) {
                Ok(mut r) => {
                    if let Some(wall) = r.wall_mut() {
                        *wall = wall.wrapping_add(last_wall_ns);
                        last_wall_ns = *wall;
                    }
                    records.push(r)
                }
                Err(e) => {
                    let _ = e; // the offset and index locate the bad frame
                    let kind = TailErrorKind::BadRecord(retrace_sim::trace::BodyError::Malformed(
                        "log record",
                    ));
                    tail = Some(TailError {
                        offset: start,
                        index: records.len() as u64,
                        kind,
                    });
                    break;
                }
            },
            Err(kind) => {
                tail = Some(TailError {
                    offset: start,
                    index: records.len() as u64,
                    kind,
                });
                break;
            }
        }
    }
    let mut stopped = records.iter().find_map(|r| match r {
        LogRecord::Incomplete { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    if stopped.is_none() {
        stopped = std::fs::read(incomplete_marker(path))
            .ok()
            .map(|b| match b.len() {
                0 => "its marker is empty (no room was left for the reason)".to_string(),
                n => String::from_utf8_lossy(&b[..n.min(4096)]).into_owned(),
            });
    }
    let cut = (tail.is_some() || stopped.is_some()).then(|| {
        let unreadable_bytes = tail.as_ref().map_or(0, |t| size.saturating_sub(t.offset));
        // A snapshot is a step boundary too: the step before it was whole. A tap's record
        // is whole by itself.
        let keep = records
            .iter()
            .rposition(|r| {
                r.is_input() || matches!(r, LogRecord::Snapshot { .. } | LogRecord::Tap { .. })
            })
            .map_or(0, |i| match records[i] {
                LogRecord::Tap { .. } => i + 1,
                _ => i,
            });
        let dropped_records = records.len() - keep;
        records.truncate(keep);
        LogCut {
            tail,
            stopped,
            unreadable_bytes,
            dropped_records,
            dropped_segments: 0,
        }
    });
    Ok(Log {
        path: path.to_owned(),
        header,
        records,
        cut,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logs began with the trace's magic bytes, so a trace given where a log was expected
    /// (or the other way round) read as far as its header before failing obscurely.
    #[test]
    fn a_trace_is_not_taken_for_a_log_nor_a_log_of_another_version() {
        let path = Path::new("t.trace");
        let mut trace = retrace_sim::trace::MAGIC.to_vec();
        trace.extend_from_slice(&retrace_sim::trace::FORMAT_VERSION.to_le_bytes());
        trace.extend_from_slice(&[0; 16]);
        let err = read_log_from(&trace[..], trace.len() as u64, path).unwrap_err();
        assert!(err.0.contains("a retrace trace, not a node's log"), "{err}");
        let mut later = LOG_MAGIC.to_vec();
        later.extend_from_slice(&(LOG_FORMAT_VERSION + 1).to_le_bytes());
        later.extend_from_slice(&[0; 16]);
        let err = read_log_from(&later[..], later.len() as u64, path).unwrap_err();
        assert!(err.0.contains("log format version"), "{err}");
    }
}
