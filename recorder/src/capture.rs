//! `retrace capture`: the minutes around an incident, cut out of the logs of a long
//! recording as a trace that replays like a whole run's.
//!
//! The window is a time range around a mark (or a wall-clock time). Each node life that
//! overlaps it contributes its records from its latest snapshot at or before the window's
//! start (or its boot, if it booted later) to the last step that began inside the window —
//! so nothing inside the window is missing, and the node's state at the start is exact. The
//! pieces go through merge's ordering (happens-before; wall clocks only break ties), so logs
//! copied from several hosts are fine: they need no manifest, only their file names
//! (`NAME.LIFE.log[.SEGMENT]`) and headers. A message sent before a node's piece begins and
//! delivered inside the window arrives with no send: it shows as coming from before the
//! window.
//!
//! Work is proportional to the window, not to the recording: segments are chosen by their
//! headers' start times, and only those that overlap the window are read.

use crate::log::{read_log, read_log_header, LogHeader, LogRecord, Mark, RecordError};
use crate::merge::{push_life, write_trace, MergeReport, Step};
use crate::segments::parse_log_file_name;
use retrace_sim::trace::{Header, NodeInfo, Origin};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the window is around.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Around {
    /// A wall-clock time, in ns since the Unix epoch.
    Time(u64),
    /// The latest mark whose reason is this text (or, failing that, contains it).
    Mark(String),
}

#[derive(Clone, Debug)]
pub struct CaptureOptions {
    pub around: Around,
    pub before: Duration,
    pub after: Duration,
}

/// What a capture did.
#[derive(Debug, Default)]
pub struct CaptureReport {
    pub merge: MergeReport,
    /// The window, in ns since the Unix epoch.
    pub start_ns: u64,
    pub end_ns: u64,
    /// The mark the window is around, if it is around one.
    pub mark: Option<Mark>,
    /// Node lives with steps in the window.
    pub lives: usize,
    /// Segment files whose records were read (the others only had their header read).
    pub segments_read: usize,
    pub segments_skipped: usize,
}

/// One segment file found in the directories.
#[derive(Clone, Debug)]
struct SegmentFile {
    path: PathBuf,
    header: LogHeader,
}

/// Every life's segments in `dirs`, by (node name, life), each life's in segment order. A
/// segment found in two directories (copied twice) is read once.
/// A segment whose header does not read (a node killed while starting it) is left out,
/// named in `problems`.
fn find_lives(
    dirs: &[PathBuf],
    problems: &mut Vec<String>,
) -> Result<BTreeMap<(String, u32), Vec<SegmentFile>>, RecordError> {
    let mut lives: BTreeMap<(String, u32), BTreeMap<u32, SegmentFile>> = BTreeMap::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries.filter_map(Result::ok) {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            // A tap's log is no node's life (see `tap::load_taps`).
            if crate::tap::is_tap_log_name(file_name) {
                continue;
            }
            let Some((name, life, segment)) = parse_log_file_name(file_name) else {
                continue;
            };
            let slot = lives.entry((name, life)).or_default();
            if slot.contains_key(&segment) {
                continue;
            }
            let path = entry.path();
            let header = match read_log_header(&path) {
                Ok(h) => h,
                Err(e) => {
                    problems.push(format!("{e}; left out"));
                    continue;
                }
            };
            if header.segment != segment || header.incarnation != life {
                return Err(RecordError(format!(
                    "{}: its header says life {} segment {}, its name life {life} segment {segment}",
                    path.display(),
                    header.incarnation,
                    header.segment
                )));
            }
            slot.insert(segment, SegmentFile { path, header });
        }
    }
    Ok(lives
        .into_iter()
        .map(|(k, v)| (k, v.into_values().collect()))
        .collect())
}

/// Every mark in the marks files of `dirs`, oldest first. Lines that do not parse are
/// skipped (a marks file is appended to by a node that may be killed mid-line).
fn read_marks(dirs: &[PathBuf]) -> Vec<Mark> {
    let mut marks = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "marks") {
                continue;
            }
            let Ok(file) = std::fs::File::open(&path) else {
                continue;
            };
            let Ok(text) = retrace_sim::limits::read_text_bounded(
                file,
                retrace_sim::limits::MAX_MANIFEST_BYTES,
            ) else {
                continue;
            };
            marks.extend(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<Mark>(l).ok()),
            );
        }
    }
    marks.sort_by(|a, b| (a.wall_ns, &a.node).cmp(&(b.wall_ns, &b.node)));
    marks.dedup();
    marks
}

/// The mark `text` names: the latest whose reason is `text`, else the latest whose reason
/// contains it.
fn find_mark(marks: &[Mark], text: &str) -> Result<Mark, RecordError> {
    let exact = marks.iter().rev().find(|m| m.reason == text);
    let found = exact.or_else(|| marks.iter().rev().find(|m| m.reason.contains(text)));
    match found {
        Some(m) => Ok(m.clone()),
        None if marks.is_empty() => Err(RecordError(format!(
            "no mark `{text}`: these logs have no marks (`retrace mark ADDR REASON`, or SIGUSR1 to a node); give a time instead"
        ))),
        None => {
            let known: Vec<String> = marks
                .iter()
                .rev()
                .take(10)
                .map(|m| format!("`{}` ({})", m.reason, m.node))
                .collect();
            Err(RecordError(format!(
                "no mark `{text}`; the latest marks are {}",
                known.join(", ")
            )))
        }
    }
}

/// The records of one life that the window needs, read from the fewest segments.
struct Piece {
    records: Vec<LogRecord>,
    /// Whether the life's end (a clean stop, or the end of its last record) lies in the
    /// window, rather than after it.
    ends_in_window: bool,
    segments_read: usize,
}

/// Cuts life `segments` to the window: from its latest boot or snapshot at or before
/// `start_ns` to its last step that began by `end_ns`. `None` if the life has no step in
/// the window.
fn cut_life(
    segments: &[SegmentFile],
    start_ns: u64,
    end_ns: u64,
) -> Result<Option<Piece>, RecordError> {
    let Some(first) = segments.first() else {
        return Ok(None);
    };
    if first.header.started_wall_ns > end_ns {
        return Ok(None);
    }
    // The last segment begun by the window's start: its first record (a boot or a
    // snapshot) is before the window, so nothing earlier is needed.
    let from = segments
        .iter()
        .rposition(|s| s.header.started_wall_ns <= start_ns)
        .unwrap_or(0);
    let mut records = Vec::new();
    let mut segments_read = 0;
    let mut next_record = None;
    let mut cut = false;
    for s in segments[from..]
        .iter()
        .take_while(|s| s.header.started_wall_ns <= end_ns)
    {
        if next_record.is_some_and(|r| r != s.header.first_record) {
            return Err(RecordError(format!(
                "{}: a segment before it is missing",
                s.path.display()
            )));
        }
        let log = read_log(&s.path).map_err(|e| RecordError(e.0))?;
        segments_read += 1;
        next_record = Some(log.header.first_record + log.records.len() as u64);
        cut = log.cut.is_some();
        records.extend(log.records);
        if cut {
            break;
        }
    }
    let reached_last = from + segments_read == segments.len() || cut;
    // Where the piece starts: the latest boot or snapshot at or before the window's start.
    let is_boot = |r: &LogRecord| matches!(r, LogRecord::Start { .. } | LogRecord::Snapshot { .. });
    let begin = records
        .iter()
        .rposition(|r| is_boot(r) && r.wall_ns().is_some_and(|w| w <= start_ns))
        .unwrap_or(0);
    if !records.get(begin).is_some_and(is_boot) {
        return Ok(None);
    }
    // Where it ends: before the first input after the window.
    let end = records[begin..]
        .iter()
        .position(|r| r.is_input() && r.wall_ns().is_some_and(|w| w > end_ns))
        .map(|p| p + begin);
    let ends_in_window = end.is_none() && reached_last;
    let mut piece: Vec<LogRecord> = match end {
        Some(end) => records.drain(begin..end).collect(),
        None => records.drain(begin..).collect(),
    };
    // A life over before the window began has nothing in it.
    let last_wall = piece.iter().rev().find_map(LogRecord::wall_ns).unwrap_or(0);
    if ends_in_window && last_wall < start_ns {
        return Ok(None);
    }
    piece.shrink_to_fit();
    Ok(Some(Piece {
        records: piece,
        ends_in_window,
        segments_read,
    }))
}

/// Builds the trace of the window `opts` names from the logs in `dirs` into `out`.
pub fn capture(
    dirs: &[PathBuf],
    opts: &CaptureOptions,
    out: &Path,
) -> Result<CaptureReport, RecordError> {
    let mut report = CaptureReport::default();
    let lives = find_lives(dirs, &mut report.merge.problems)?;
    let Some(((_, _), any)) = lives.iter().next() else {
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(RecordError(format!(
            "no node logs (NAME.LIFE.log) in {}",
            shown.join(", ")
        )));
    };
    let reference = any[0].header.clone();
    for segments in lives.values() {
        let h = &segments[0].header;
        if h.model != reference.model
            || h.scenario_toml != reference.scenario_toml
            || h.nodes != reference.nodes
        {
            return Err(RecordError(format!(
                "{} and {} are logs of different runs (model, scenario or nodes differ)",
                any[0].path.display(),
                segments[0].path.display()
            )));
        }
    }
    let center = match &opts.around {
        Around::Time(t) => *t,
        Around::Mark(text) => {
            let mark = find_mark(&read_marks(dirs), text)?;
            let t = mark.wall_ns;
            report.mark = Some(mark);
            t
        }
    };
    report.start_ns = center.saturating_sub(opts.before.as_nanos() as u64);
    report.end_ns = center.saturating_add(opts.after.as_nanos() as u64);

    let node_count = reference.nodes.len();
    let mut per_node: Vec<Vec<Step>> = (0..node_count).map(|_| Vec::new()).collect();
    let mut later_life: BTreeMap<(u32, u32), bool> = BTreeMap::new();
    for segments in lives.values() {
        let h = &segments[0].header;
        later_life.insert((h.node, h.incarnation), true);
    }
    for segments in lives.values() {
        let h = &segments[0].header;
        let Some(steps) = per_node.get_mut(h.node as usize) else {
            return Err(RecordError(format!(
                "{}: node {} of a {node_count}-node cluster",
                segments[0].path.display(),
                h.node
            )));
        };
        let total = segments.len();
        let Some(piece) = cut_life(segments, report.start_ns, report.end_ns)? else {
            report.segments_skipped += total;
            continue;
        };
        report.segments_read += piece.segments_read;
        report.segments_skipped += total - piece.segments_read;
        report.lives += 1;
        // Without a manifest, a life that did not stop cleanly crashed if a later life of the
        // node exists; the last life may still be running where the logs were copied.
        let stopped = matches!(piece.records.last(), Some(LogRecord::Stop { .. }));
        let restarted = later_life.contains_key(&(h.node, h.incarnation + 1));
        let crashed = piece.ends_in_window && !stopped && restarted;
        report.merge.logs += 1;
        push_life(steps, h.node, h.incarnation, piece.records, crashed);
    }
    // Lives come in name order; each node's program order is by life.
    for steps in &mut per_node {
        steps.sort_by_key(|s| s.incarnation);
    }
    let what = match &report.mark {
        Some(m) => format!("mark `{}` on {}", m.reason, m.node),
        None => format!("{} ns", center),
    };
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let header = Header {
        origin: Origin::Recorded {
            description: format!(
                "captured from {} around {what}: {} before, {} after",
                shown.join(", "),
                crate::policy::ShowDuration(opts.before),
                crate::policy::ShowDuration(opts.after)
            ),
        },
        model: reference.model.clone(),
        scenario_name: reference.scenario_name.clone(),
        scenario_toml: reference.scenario_toml.clone(),
        nodes: NodeInfo::list(
            reference
                .nodes
                .iter()
                .map(|n| (n.name.as_str(), n.role.as_str())),
        ),
        writer: concat!("retrace-recorder ", env!("CARGO_PKG_VERSION")).to_string(),
    };
    let names: Vec<String> = reference.nodes.iter().map(|n| n.name.clone()).collect();
    let (taps, tap_logs) = crate::tap::load_taps(
        dirs,
        report.start_ns,
        report.end_ns,
        &mut report.merge.problems,
    )?;
    report.merge.logs += tap_logs;
    write_trace(per_node, taps, &names, &header, out, &mut report.merge)?;
    Ok(report)
}

/// Parses a wall-clock time: RFC 3339 in UTC (`2026-12-01T16:03:05.25Z`) or nanoseconds
/// since the Unix epoch.
pub fn parse_wall_time(text: &str) -> Option<u64> {
    let t = text.trim();
    if let Ok(ns) = t.parse::<u64>() {
        return Some(ns);
    }
    let t = t.strip_suffix('Z').or_else(|| t.strip_suffix("+00:00"))?;
    let (date, time) = t.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, mo, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut h = hms.splitn(3, ':').map(str::parse::<i64>);
    let (hh, mm, ss) = (h.next()?.ok()?, h.next()?.ok()?, h.next()?.ok()?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    if frac.len() > 9 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let frac_ns: i64 = format!("{frac:0<9}").parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_times_parse_as_utc() {
        assert_eq!(parse_wall_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_wall_time("2026-12-01T16:03:05.25Z"),
            Some(1_796_140_985_250_000_000)
        );
        assert_eq!(parse_wall_time("12345"), Some(12345));
        assert_eq!(parse_wall_time("2026-13-01T00:00:00Z"), None);
        assert_eq!(
            parse_wall_time("2026-12-01T16:03:05"),
            None,
            "a zone is required"
        );
        assert_eq!(parse_wall_time("disk full on replica-2"), None);
    }
}
