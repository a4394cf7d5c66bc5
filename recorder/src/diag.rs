//! How the runtime tells its operator something, without ever being able to fail because
//! of it.
//!
//! `eprintln!` panics when stderr cannot be written — and the launcher points a node's
//! stderr at a file in the recording directory, which is exactly the disk that fills up.
//! A node must keep serving when its disk is full, so nothing in the runtime prints with
//! `eprintln!`/`println!`: human-readable warnings go through [`warn`] (write errors
//! ignored, at most [`WARNINGS_PER_SECOND`] a second so that a flood of bad connections
//! cannot turn into a flood of lines), and what a supervisor must act on goes through
//! [`status`] as one JSON line on stdout, which the launcher reads through a pipe (not the
//! disk) and relays to the operator once.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Warnings printed per second at most; the rest are counted and summarised.
pub const WARNINGS_PER_SECOND: u64 = 20;

static WINDOW_SECOND: AtomicU64 = AtomicU64::new(0);
static WINDOW_COUNT: AtomicU64 = AtomicU64::new(0);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Prints a warning line on stderr; a failed write is ignored (see the module docs).
pub fn warn(text: std::fmt::Arguments<'_>) {
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if WINDOW_SECOND.swap(second, Ordering::Relaxed) != second {
        WINDOW_COUNT.store(0, Ordering::Relaxed);
    }
    if WINDOW_COUNT.fetch_add(1, Ordering::Relaxed) >= WARNINGS_PER_SECOND {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut err = std::io::stderr().lock();
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    if suppressed > 0 {
        let _ = writeln!(err, "({suppressed} similar warnings suppressed)");
    }
    let _ = writeln!(err, "{text}");
}

/// Something a supervisor acts on, one JSON line on stdout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Status {
    /// The node's log cannot be written any more; the node keeps serving unrecorded.
    RecordingStopped { log: String, reason: String },
    /// The node's durable storage could not be persisted (it keeps serving from memory).
    StorageNotPersisted { reason: String },
}

/// Reports `s` on stdout as one JSON line; a failed write is ignored.
pub fn status(s: &Status) {
    if let Ok(line) = serde_json::to_string(s) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Parses a status line a node printed (the launcher's side).
pub fn parse_status(line: &str) -> Option<Status> {
    serde_json::from_str(line.trim()).ok()
}
