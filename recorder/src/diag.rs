//! How the runtime tells its operator something, without ever being able to fail because
//! of it — and without printing: a library does not own the process's stdout and stderr.
//!
//! The runtime hands each [`Diagnostic`] to the sink the program installed with
//! [`set_sink`] (the `retrace` binary renders warnings on stderr and statuses as JSON lines on
//! stdout, ignoring write errors: the launcher points a node's stderr at a file in the
//! recording directory, which is exactly the disk that fills up, and a node must keep serving
//! when its disk is full). Without a sink nothing is shown. Warnings are limited to
//! [`WARNINGS_PER_SECOND`] here, before any sink, so that a flood of bad connections cannot
//! turn into a flood of lines; what a supervisor must act on is a [`Status`], which the
//! launcher reads from the node's stdout through a pipe (not the disk) and relays once.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Warnings printed per second at most; the rest are counted and summarised.
pub const WARNINGS_PER_SECOND: u64 = 20;

static WINDOW_SECOND: AtomicU64 = AtomicU64::new(0);
static WINDOW_COUNT: AtomicU64 = AtomicU64::new(0);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// What the runtime tells its operator.
#[derive(Debug)]
pub enum Diagnostic<'a> {
    /// A line for a person.
    Warning(std::fmt::Arguments<'a>),
    /// Warnings left out by the rate limit since the last one shown.
    Suppressed(u64),
    /// Something a supervisor acts on.
    Status(&'a Status),
}

type Sink = Box<dyn Fn(Diagnostic<'_>) + Send + Sync>;

static SINK: OnceLock<Sink> = OnceLock::new();

/// Installs where diagnostics go, once per process; `false` if one was already installed.
pub fn set_sink(sink: impl Fn(Diagnostic<'_>) + Send + Sync + 'static) -> bool {
    SINK.set(Box::new(sink)).is_ok()
}

fn emit(d: Diagnostic<'_>) {
    if let Some(sink) = SINK.get() {
        sink(d);
    }
}

/// A warning, at most [`WARNINGS_PER_SECOND`] a second (the rest are counted and the count
/// given with the next one shown).
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
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    if suppressed > 0 {
        emit(Diagnostic::Suppressed(suppressed));
    }
    emit(Diagnostic::Warning(text));
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

/// Reports `s` to the supervisor (the `retrace` binary writes it as one JSON line on
/// stdout, which [`parse_status`] reads back).
pub fn status(s: &Status) {
    emit(Diagnostic::Status(s));
}

/// Parses a status line a node printed (the launcher's side).
pub fn parse_status(line: &str) -> Option<Status> {
    serde_json::from_str(line.trim()).ok()
}
