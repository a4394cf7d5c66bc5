//! Paging through a trace too large to open whole. The TUI shows one window of it at a time
//! (a trace of its own, cut by `retrace_replayer::window`, its nodes resumed from the
//! states re-execution reached); `(` and `)` open the window before and after, `:window N`
//! the one around the trace's event N.
//!
//! Each page is cut afresh from the trace's index (from its nearest state checkpoint), so
//! the TUI's memory is one window's and the index's, however long the trace.

use crate::session::{ModelSession, Session};
use retrace_replayer::index::IndexedTrace;
use retrace_replayer::window::{bounds, cut, Span, Window};
use retrace_replayer::Replay;
use retrace_sim::Model;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// Which window to open next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toward {
    /// The one ending where the current one starts (a little overlap, so the step at the
    /// edge is seen on both).
    Before,
    /// The one starting where the current one ends.
    After,
    /// The one around the trace's event with this number.
    Around(u64),
}

/// A window opened, ready for the app.
pub struct Page {
    pub session: Box<dyn Session>,
    /// The window's record to select: where the user was, seen from the new window.
    pub select: usize,
    /// One line on what the window is.
    pub line: String,
}

/// A trace seen one window at a time.
pub trait Pager {
    /// The trace's number of the current window's record `k` (None for the window's own
    /// records: its resumes, cuts and storage images).
    fn original(&self, k: usize) -> Option<u64>;
    /// How many records the whole trace has.
    fn trace_len(&self) -> u64;
    /// Opens another window; `Ok(None)` when there is none that way (the trace's edge).
    fn open(&mut self, toward: Toward) -> Result<Option<Page>, String>;
}

/// [`Pager`] over a trace file of model `M`, through its index.
pub struct WindowPager<M: Model> {
    path: PathBuf,
    indexed: IndexedTrace,
    records: u64,
    span: Span,
    model: PhantomData<M>,
}

impl<M: Model> WindowPager<M> {
    /// Cuts the window of about `records` records around the trace's event `around` and
    /// returns it as the first page, with the pager that opens the others. `progress`
    /// sees the record re-execution to the window's start has reached, and the start.
    pub fn first(
        path: &Path,
        mut indexed: IndexedTrace,
        around: u64,
        records: u64,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(Page, WindowPager<M>), String> {
        let (from, to) = bounds(&mut indexed, around, records).map_err(|e| e.to_string())?;
        let window = cut::<M>(path, &mut indexed, from, to, &mut |at| progress(at, from))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut pager = WindowPager {
            path: path.to_owned(),
            indexed,
            records: records.max(1),
            span: window.span.clone(),
            model: PhantomData,
        };
        let select = window.span.local(around).unwrap_or(0) as usize;
        let page = pager.page(window, select)?;
        Ok((page, pager))
    }

    fn page(&mut self, window: Window, select: usize) -> Result<Page, String> {
        let line = window.describe(&self.path);
        let replay =
            Replay::<M>::new(window.trace).map_err(|e| format!("{}: {e}", self.path.display()))?;
        // Only a page the app will show moves the pager: on an error it stays on the
        // window still shown.
        self.span = window.span;
        Ok(Page {
            session: Box::new(ModelSession::new(replay)),
            select,
            line,
        })
    }
}

impl<M: Model> Pager for WindowPager<M> {
    fn original(&self, k: usize) -> Option<u64> {
        self.span.original(k as u64)
    }

    fn trace_len(&self) -> u64 {
        self.indexed.len()
    }

    fn open(&mut self, toward: Toward) -> Result<Option<Page>, String> {
        let len = self.indexed.len();
        // Pages overlap by an eighth, so the steps at an edge are seen in both.
        let overlap = self.records / 8;
        // `bounds` puts three quarters of a window before the event it is around.
        let before = self.records / 4 * 3;
        let (around, keep) = match toward {
            Toward::After if self.span.to >= len => return Ok(None),
            Toward::After => {
                let from = self.span.to.saturating_sub(overlap);
                (from + before, self.span.to - 1)
            }
            Toward::Before if self.span.from == 0 => return Ok(None),
            Toward::Before => {
                let to = (self.span.from + overlap).min(len);
                let from = to.saturating_sub(self.records);
                (from + before, self.span.from)
            }
            Toward::Around(i) if i >= len => {
                return Err(format!("no event {i}: the trace has {len}"));
            }
            Toward::Around(i) => (i, i),
        };
        let (from, to) = bounds(&mut self.indexed, around.min(len - 1), self.records)
            .map_err(|e| e.to_string())?;
        let window = cut::<M>(&self.path, &mut self.indexed, from, to, &mut |_| {})
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        // The record the user was at (the edge they paged over, or the one asked for).
        let select = window.span.local(keep).unwrap_or(0) as usize;
        self.page(window, select).map(Some)
    }
}
