//! `tracing` capture. Node code that logs with `tracing`'s macros (`info!`, `debug!`,
//! spans) has its events recorded into the trace as `Log` records of the step being handled,
//! with that step's node and time (virtual in the simulator, wall in the real runtime).
//!
//! Capture is per run, not global: a runtime makes a [`Capture`], holds [`Capture::enter`]'s
//! guard while it runs node code (this sets a *thread-local* default dispatcher), and takes
//! the lines after each handler. Runs on other threads, and tests running in parallel, each
//! see only their own lines; a global subscriber the program installed is shadowed only
//! on the running thread and only while the guard lives.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};

/// Lines kept per step at most: a handler stuck in a logging loop must not eat the memory.
pub const MAX_LINES_PER_STEP: usize = 1024;
/// Characters kept per line at most.
pub const MAX_LINE_CHARS: usize = 4096;

/// One captured event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// 1 = error, 2 = warn, 3 = info, 4 = debug, 5 = trace.
    pub level: u8,
    /// The event's target (by default its module path).
    pub target: String,
    /// The entered spans, the message and the other fields: `span: message key=value`.
    pub text: String,
}

/// `tracing`'s level as the trace stores it.
pub fn level_code(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// A stored level's name (`?` for a code no writer uses).
pub fn level_name(code: u8) -> &'static str {
    match code {
        1 => "ERROR",
        2 => "WARN",
        3 => "INFO",
        4 => "DEBUG",
        5 => "TRACE",
        _ => "?",
    }
}

#[derive(Default)]
struct Spans {
    next_id: u64,
    /// Open spans: their text (`name{field=value}`) and reference count.
    open: BTreeMap<u64, (String, usize)>,
    /// Entered spans, innermost last.
    stack: Vec<u64>,
}

#[derive(Default)]
struct Shared {
    lines: Mutex<Vec<LogLine>>,
    /// Set when `lines` is not empty, so that taking from an empty buffer costs no lock.
    pending: AtomicBool,
    spans: Mutex<Spans>,
    dropped: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in node code while logging must not poison later runs' capture.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A run's capture of `tracing` events.
pub struct Capture {
    shared: Arc<Shared>,
    dispatch: Dispatch,
}

impl Default for Capture {
    fn default() -> Self {
        Self::new()
    }
}

impl Capture {
    pub fn new() -> Capture {
        let shared = Arc::new(Shared::default());
        let dispatch = Dispatch::new(Collector {
            shared: shared.clone(),
        });
        Capture { shared, dispatch }
    }

    /// Makes this capture the current thread's dispatcher until the guard drops.
    pub fn enter(&self) -> tracing::dispatcher::DefaultGuard {
        tracing::dispatcher::set_default(&self.dispatch)
    }

    /// The lines captured since the last call (cheap when there are none).
    pub fn take(&self) -> Vec<LogLine> {
        // A plain load first: most steps log nothing, and a swap is a locked instruction.
        if !self.shared.pending.load(Ordering::Acquire)
            || !self.shared.pending.swap(false, Ordering::AcqRel)
        {
            return Vec::new();
        }
        std::mem::take(&mut *lock(&self.shared.lines))
    }

    /// Lines dropped because a step logged more than [`MAX_LINES_PER_STEP`].
    pub fn dropped(&self) -> u64 {
        *lock(&self.shared.dropped)
    }
}

/// Formats an event's or a span's fields: the message first, then `key=value`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

struct Collector {
    shared: Arc<Shared>,
}

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let mut text = attrs.metadata().name().to_string();
        if !fields.rest.is_empty() || !fields.message.is_empty() {
            let inner = format!("{}{}", fields.message, fields.rest);
            let _ = write!(text, "{{{}}}", inner.trim_start());
        }
        let mut spans = lock(&self.shared.spans);
        spans.next_id += 1;
        let id = spans.next_id;
        spans.open.insert(id, (text, 1));
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut text = String::new();
        {
            let spans = lock(&self.shared.spans);
            for id in &spans.stack {
                if let Some((name, _)) = spans.open.get(id) {
                    let _ = write!(text, "{name}: ");
                }
            }
        }
        text.push_str(&fields.message);
        text.push_str(&fields.rest);
        if text.len() > MAX_LINE_CHARS {
            let cut = (0..=MAX_LINE_CHARS)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text.truncate(cut);
            text.push('…');
        }
        let mut lines = lock(&self.shared.lines);
        if lines.len() >= MAX_LINES_PER_STEP {
            *lock(&self.shared.dropped) += 1;
            return;
        }
        lines.push(LogLine {
            level: level_code(event.metadata().level()),
            target: event.metadata().target().to_string(),
            text,
        });
        self.shared.pending.store(true, Ordering::Release);
    }

    fn enter(&self, span: &Id) {
        lock(&self.shared.spans).stack.push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut spans = lock(&self.shared.spans);
        if let Some(k) = spans.stack.iter().rposition(|&s| s == span.into_u64()) {
            spans.stack.remove(k);
        }
    }

    fn clone_span(&self, id: &Id) -> Id {
        if let Some(entry) = lock(&self.shared.spans).open.get_mut(&id.into_u64()) {
            entry.1 += 1;
        }
        id.clone()
    }

    fn try_close(&self, id: Id) -> bool {
        let mut spans = lock(&self.shared.spans);
        let k = id.into_u64();
        let closed = match spans.open.get_mut(&k) {
            Some(entry) => {
                entry.1 = entry.1.saturating_sub(1);
                entry.1 == 0
            }
            None => false,
        };
        if closed {
            spans.open.remove(&k);
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_events_with_spans_and_fields_on_this_thread_only() {
        let capture = Capture::new();
        {
            let _g = capture.enter();
            let span = tracing::info_span!("view_change", epoch = 2);
            let _e = span.enter();
            tracing::info!(key = "k1", "put acknowledged");
            tracing::debug!("detail {}", 7);
            std::thread::spawn(|| tracing::warn!("elsewhere"))
                .join()
                .unwrap();
        }
        tracing::error!("after the guard");
        let lines = capture.take();
        assert_eq!(
            lines,
            vec![
                LogLine {
                    level: 3,
                    target: "retrace_sim::logs::tests".into(),
                    text: "view_change{epoch=2}: put acknowledged key=\"k1\"".into(),
                },
                LogLine {
                    level: 4,
                    target: "retrace_sim::logs::tests".into(),
                    text: "view_change{epoch=2}: detail 7".into(),
                },
            ]
        );
        assert!(capture.take().is_empty());
    }
}
