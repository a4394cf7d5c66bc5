//! A node life's log as a sequence of segment files, and what is kept of a node's segments.
//!
//! Segment 0 of a life is the file the manifest names (`replica-0.1.log`); segment `k` is
//! that name with `.k` after it. Every segment is a whole log file with its own header (which
//! says its number and the index of its first record in the life); every segment after the
//! first starts with a snapshot of the node, so any suffix of a life's segments can be
//! re-executed on its own. That is what makes retention safe: deleting the oldest segments
//! leaves a log that still verifies, merges and replays from its first snapshot.
//!
//! Crash safety: a segment is started only after the segment before it is complete in its
//! file, with its header and snapshot in one write, so a kill at any moment leaves
//! consecutive segments of which only the last can be cut — or, killed inside that write,
//! have a torn header, which readers take as a cut before it.
//! Deletion goes oldest first and each deleted name is first written to the node's
//! `.retired` journal, so a reader can tell a segment retention removed from one that was
//! lost.

use crate::log::{read_log, Log, LogCut, LogError, LogRecord};
use crate::policy::Retain;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The file of segment `k` of the life whose first segment is `base`.
pub fn segment_path(base: &Path, k: u32) -> PathBuf {
    if k == 0 {
        return base.to_owned();
    }
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".{k}"));
    PathBuf::from(name)
}

/// The journal beside the logs that lists the segments retention deleted, one file name
/// a line.
pub fn retired_journal(dir: &Path, node_name: &str) -> PathBuf {
    dir.join(format!("{node_name}.retired"))
}

/// The log of node `name`'s life `incarnation`, as the launcher names it.
pub fn log_file_name(name: &str, incarnation: u32) -> String {
    format!("{name}.{incarnation}.log")
}

/// One segment file of a node found on disk.
#[derive(Clone, Debug)]
struct Found {
    incarnation: u32,
    segment: u32,
    path: PathBuf,
    bytes: u64,
    modified: SystemTime,
}

/// Every segment of node `name` in `dir`, every life, oldest first.
fn node_segments(dir: &Path, name: &str) -> Vec<Found> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Found> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let (node, incarnation, segment) = parse_log_file_name(&file)?;
            if node != name {
                return None;
            }
            let meta = e.metadata().ok()?;
            Some(Found {
                incarnation,
                segment,
                path: e.path(),
                bytes: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            })
        })
        .collect();
    found.sort_by_key(|f| (f.incarnation, f.segment));
    found
}

/// `NAME.LIFE.log` is (NAME, LIFE, 0); `NAME.LIFE.log.K` is (NAME, LIFE, K).
pub fn parse_log_file_name(file: &str) -> Option<(String, u32, u32)> {
    let (stem, segment) = match file.rsplit_once(".log") {
        Some((stem, "")) => (stem, 0),
        Some((stem, tail)) => (
            stem,
            tail.strip_prefix('.')?.parse().ok().filter(|&k| k > 0)?,
        ),
        None => return None,
    };
    let (name, life) = stem.rsplit_once('.')?;
    Some((name.to_string(), life.parse().ok()?, segment))
}

/// The bytes each node's segments take in `dir`, all lives, by node name: one listing of
/// the directory.
pub fn log_bytes_by_node(dir: &Path) -> BTreeMap<String, u64> {
    let mut by_node = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name();
            let Some((node, _, _)) = name.to_str().and_then(parse_log_file_name) else {
                continue;
            };
            let bytes = e.metadata().map_or(0, |m| m.len());
            *by_node.entry(node).or_insert(0) += bytes;
        }
    }
    by_node
}

/// What retention removed in one pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Retired {
    pub segments: usize,
    pub bytes: u64,
}

/// Deletes node `name`'s oldest segments in `dir` until what is left meets `retain`, with
/// room for the segment `current` (being written) to grow by `reserve_bytes` more: so the
/// node stays within its bound until the next rotation. `current` is never deleted, nor
/// anything after it.
pub fn retire(
    dir: &Path,
    name: &str,
    current: &Path,
    retain: Retain,
    reserve_bytes: u64,
) -> std::io::Result<Retired> {
    let segments = node_segments(dir, name);
    let Some(current_at) = segments.iter().position(|f| f.path == current) else {
        return Ok(Retired::default());
    };
    let mut total: u64 = segments.iter().map(|f| f.bytes).sum::<u64>() + reserve_bytes;
    let now = SystemTime::now();
    let mut doomed = Vec::new();
    for f in &segments[..current_at] {
        let delete = match retain {
            Retain::All => false,
            Retain::Bytes(max) => total > max,
            Retain::Age(max) => now.duration_since(f.modified).unwrap_or(Duration::ZERO) > max,
        };
        if !delete {
            break;
        }
        total -= f.bytes;
        doomed.push(f);
    }
    let mut retired = Retired::default();
    if !doomed.is_empty() {
        let mut journal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(retired_journal(dir, name))?;
        let mut lines = String::new();
        for f in &doomed {
            if let Some(file) = f.path.file_name().and_then(|n| n.to_str()) {
                lines.push_str(file);
                lines.push('\n');
            }
        }
        journal.write_all(lines.as_bytes())?;
        journal.sync_data()?;
        for f in doomed {
            std::fs::remove_file(&f.path)?;
            let _ = std::fs::remove_file(crate::log::incomplete_marker(&f.path));
            retired.segments += 1;
            retired.bytes += f.bytes;
        }
    }
    Ok(retired)
}

/// Work on a node's segments that must not hold up its event loop: making a new segment's
/// name durable (a directory sync) and retention's deletions. One thread per log behind a
/// bounded queue; when the queue is full the caller does the job itself, so nothing waits
/// unboundedly and nothing is dropped.
pub struct Housekeeper {
    tx: Option<std::sync::mpsc::SyncSender<Job>>,
    handle: Option<std::thread::JoinHandle<()>>,
    retired: std::sync::Arc<std::sync::Mutex<Retired>>,
}

/// Jobs waiting for the housekeeping thread.
const HOUSEKEEPING_QUEUE: usize = 16;

/// One piece of housekeeping.
pub enum Job {
    /// Sync a directory, so a file created in it survives a machine crash.
    SyncDir(PathBuf),
    /// Run [`retire`] with these arguments.
    Retire {
        dir: PathBuf,
        name: String,
        current: PathBuf,
        retain: Retain,
        reserve_bytes: u64,
    },
}

impl Job {
    fn run(self, retired: &std::sync::Mutex<Retired>) {
        match self {
            Job::SyncDir(dir) => {
                if let Err(e) = std::fs::File::open(&dir).and_then(|d| d.sync_all()) {
                    crate::diag::warn(format_args!("warning: syncing {}: {e}", dir.display()));
                }
            }
            Job::Retire {
                dir,
                name,
                current,
                retain,
                reserve_bytes,
            } => match retire(&dir, &name, &current, retain, reserve_bytes) {
                Ok(r) => {
                    if let Ok(mut total) = retired.lock() {
                        total.segments += r.segments;
                        total.bytes += r.bytes;
                    }
                }
                // The disk fills more slowly than the node would stop being recorded.
                Err(e) => crate::diag::warn(format_args!(
                    "warning: [{name}] deleting old log segments: {e}"
                )),
            },
        }
    }
}

impl Default for Housekeeper {
    fn default() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(HOUSEKEEPING_QUEUE);
        let retired = std::sync::Arc::new(std::sync::Mutex::new(Retired::default()));
        let mine = retired.clone();
        let handle = std::thread::Builder::new()
            .name("log-housekeeping".into())
            .spawn(move || {
                for job in rx {
                    job.run(&mine);
                }
            })
            .ok();
        Housekeeper {
            tx: handle.is_some().then_some(tx),
            handle,
            retired,
        }
    }
}

impl Housekeeper {
    /// Hands `job` to the thread, or does it now if the thread is busy or gone.
    pub fn submit(&self, job: Job) {
        let job = match &self.tx {
            Some(tx) => match tx.try_send(job) {
                Ok(()) => return,
                Err(std::sync::mpsc::TrySendError::Full(job))
                | Err(std::sync::mpsc::TrySendError::Disconnected(job)) => job,
            },
            None => job,
        };
        job.run(&self.retired);
    }

    /// What retention deleted so far.
    pub fn retired(&self) -> Retired {
        self.retired
            .lock()
            .map(|r| Retired {
                segments: r.segments,
                bytes: r.bytes,
            })
            .unwrap_or_default()
    }

    /// Waits for the jobs handed over so far.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Housekeeper {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The bytes node `name`'s segments take in `dir`, all lives.
pub fn node_log_bytes(dir: &Path, name: &str) -> u64 {
    node_segments(dir, name).iter().map(|f| f.bytes).sum()
}

/// Whether retention deleted the file `file_name` of node `name`.
pub fn was_retired(dir: &Path, name: &str, file_name: &str) -> bool {
    std::fs::read_to_string(retired_journal(dir, name))
        .is_ok_and(|text| text.lines().any(|l| l == file_name))
}

/// A life's log read from all its segments still on disk.
#[derive(Debug)]
pub struct SegmentedLog {
    /// The segments' records joined, from the first kept segment's first record.
    pub log: Log,
    /// The segment the records start in (0 unless retention deleted the ones before).
    pub first_segment: u32,
    /// The index in the life of `log.records[0]`.
    pub first_record: u64,
    /// How many segment files were read.
    pub segments: u32,
}

impl SegmentedLog {
    /// Whether the records start at a snapshot rather than at the node's boot.
    pub fn starts_at_snapshot(&self) -> bool {
        matches!(self.log.records.first(), Some(LogRecord::Snapshot { .. }))
    }
}

/// Why a life's segments could not be read.
#[derive(Debug)]
pub enum SegmentsError {
    /// Every segment of the life was deleted by retention.
    Retired,
    /// No segment of the life exists, and retention did not delete them.
    Missing(String),
    Unreadable(LogError),
}

impl std::fmt::Display for SegmentsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentsError::Retired => f.write_str("every segment was deleted by retention"),
            SegmentsError::Missing(path) => write!(f, "{path}: no such log"),
            SegmentsError::Unreadable(e) => e.fmt(f),
        }
    }
}

/// Reads the life whose first segment is `dir/log_name` from every segment still on disk.
/// Segments must be consecutive and agree with each other (their numbers, and the record
/// numbering across them); a segment cut short ends the log there, and the cut counts any
/// later segment as left out.
pub fn read_segments(
    dir: &Path,
    node_name: &str,
    log_name: &str,
) -> Result<SegmentedLog, SegmentsError> {
    let base = dir.join(log_name);
    let incarnation = parse_log_file_name(log_name)
        .filter(|(node, _, segment)| node == node_name && *segment == 0)
        .map(|(_, inc, _)| inc);
    let Some(incarnation) = incarnation else {
        // Not named as the launcher names logs: one file.
        let log = read_log(&base).map_err(SegmentsError::Unreadable)?;
        return Ok(SegmentedLog {
            log,
            first_segment: 0,
            first_record: 0,
            segments: 1,
        });
    };
    let present: Vec<Found> = node_segments(dir, node_name)
        .into_iter()
        .filter(|f| f.incarnation == incarnation)
        .collect();
    let Some(first) = present.first() else {
        return Err(if was_retired(dir, node_name, log_name) {
            SegmentsError::Retired
        } else {
            SegmentsError::Missing(base.display().to_string())
        });
    };
    let first_segment = first.segment;
    let mut joined: Option<Log> = None;
    let mut first_record = 0;
    // The segment and record index the next segment must start at.
    let mut next: Option<(u32, u64)> = None;
    for (read, f) in present.iter().enumerate() {
        let log = match read_log(&f.path) {
            Ok(log) => log,
            // The last segment, killed while its header was being written: the life ends
            // where the segment before it does.
            Err(e) if read > 0 && read + 1 == present.len() => {
                if let Some(j) = joined.as_mut() {
                    j.cut = Some(LogCut {
                        tail: None,
                        stopped: Some(format!("its last segment is unreadable: {e}")),
                        unreadable_bytes: f.bytes,
                        dropped_records: 0,
                        dropped_segments: 1,
                    });
                }
                break;
            }
            Err(e) => return Err(SegmentsError::Unreadable(e)),
        };
        let located = |what: String| {
            SegmentsError::Unreadable(LogError(format!("{}: {what}", f.path.display())))
        };
        if log.header.segment != f.segment {
            return Err(located(format!(
                "its header says segment {}, its name segment {}",
                log.header.segment, f.segment
            )));
        }
        if let Some((segment, record)) = next {
            if f.segment != segment {
                return Err(located(format!(
                    "segment {segment} is missing before it (and retention did not delete it)"
                )));
            }
            if log.header.first_record != record {
                return Err(located(format!(
                    "it starts at record {} where the segment before it ended at {record}",
                    log.header.first_record
                )));
            }
        }
        let starts_at_snapshot = matches!(log.records.first(), Some(LogRecord::Snapshot { .. }));
        if f.segment > 0 && !starts_at_snapshot && !log.records.is_empty() {
            return Err(located(
                "a segment after the first must start with a snapshot".into(),
            ));
        }
        next = Some((
            f.segment + 1,
            log.header.first_record + log.records.len() as u64,
        ));
        let cut = log.cut.clone();
        match joined.as_mut() {
            None => {
                first_record = log.header.first_record;
                joined = Some(log);
            }
            Some(j) => j.records.extend(log.records),
        }
        if let (Some(cut), Some(j)) = (cut, joined.as_mut()) {
            // Only the last segment can be cut by a crash: a rotation closes a segment
            // whole before the next exists. Nothing after a cut is used.
            j.cut = Some(LogCut {
                dropped_segments: present.len() - read - 1,
                ..cut
            });
            break;
        }
    }
    let Some(log) = joined else {
        return Err(SegmentsError::Missing(base.display().to_string()));
    };
    Ok(SegmentedLog {
        log,
        first_segment,
        first_record,
        segments: present.len() as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_file_names_parse_with_dots_in_node_names() {
        assert_eq!(
            parse_log_file_name("replica-0.2.log"),
            Some(("replica-0".into(), 2, 0))
        );
        assert_eq!(
            parse_log_file_name("db.eu.1.log.7"),
            Some(("db.eu".into(), 1, 7))
        );
        assert_eq!(parse_log_file_name("replica-0.2.log.tmp"), None);
        assert_eq!(parse_log_file_name("replica-0.2.stderr"), None);
        assert_eq!(parse_log_file_name("replica-0.marks"), None);
    }

    #[test]
    fn segment_names_parse_back() {
        assert_eq!(parse_log_file_name("n.3.log.0"), None);
        assert_eq!(parse_log_file_name("n.3.log.2.tmp"), None);
        let base = Path::new("/d/replica-0.3.log");
        assert_eq!(segment_path(base, 0), base);
        assert_eq!(segment_path(base, 5), Path::new("/d/replica-0.3.log.5"));
    }
}
