//! The app: all state the screen shows, and the update function that keys drive. Rendering
//! (in `ui`) only reads it, so tests drive [`App::key`] and assert on the app's fields.

use crate::branches::Branches;
use crate::command::Command;
use crate::pager::{Page, Pager, Toward};
use crate::session::{Scan, Session, StepStates};
use crate::timeline::Timeline;
pub use crate::value::ValueView;
use crate::what_if::WhatIf;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use retrace_replayer::faults::FaultIndex;
use retrace_replayer::profile::{Profiler, RequestProfile};
use retrace_replayer::{event_detail, Causality, Predicate};
use retrace_sim::trace::Record;
use retrace_sim::{NodeId, RequestId};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The largest count a number prefix can reach (a motion repeated more is a jump).
const COUNT_MAX: usize = 1_000_000;
/// How long opening may re-execute to find a divergence or violation to open at.
pub const OPEN_SCAN_BUDGET: Duration = Duration::from_millis(1500);

/// What a key does to the `:` or `/` line being typed.
enum Edit {
    Done(String),
    Cancel,
    Editing(String),
}

fn edit_line(mut line: String, code: KeyCode) -> Edit {
    match code {
        KeyCode::Enter => Edit::Done(line),
        KeyCode::Esc => Edit::Cancel,
        // Backspace on an empty line leaves it, as in vim.
        KeyCode::Backspace => match line.pop() {
            Some(_) => Edit::Editing(line),
            None => Edit::Cancel,
        },
        KeyCode::Char(c) => {
            line.push(c);
            Edit::Editing(line)
        }
        _ => Edit::Editing(line),
    }
}

/// Which way a motion goes through the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// The step (its input's trace index) of the violation a trace records, if it does.
fn recorded_violation(session: &dyn Session) -> Option<usize> {
    crate::timeline::recorded_violation(&session.trace().events).map(|(i, _)| i)
}

/// How much of a causal history `w`/`e` show: the steps of the event's request (or the
/// followed value), or all of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    Narrow,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Main,
    Profile,
    Help,
    /// `v`: pick a value, then its story across the cluster.
    Value,
    /// `I`: when the failure became inevitable — the curve, and the step it names.
    Inevitable,
    /// `f`: what if — change what is pending at the event, then run the branch.
    WhatIf,
    /// `b`: the tree of branches.
    Branches,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Normal,
    Command(String),
    Search(String),
}

/// A set of steps shown bright while everything else is dimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Highlight {
    pub label: String,
    /// Sorted step numbers.
    pub steps: Vec<usize>,
    /// Sorted indices of world records lit too: the faults (drops, cuts, clock jumps) that
    /// changed what the highlighted steps saw.
    pub records: Vec<usize>,
}

impl Highlight {
    pub fn contains(&self, step: usize) -> bool {
        self.steps.binary_search(&step).is_ok()
    }
}

/// The step the selected row shows, with its detail.
pub struct Detail {
    pub step: Option<usize>,
    pub states: StepStates,
}

pub struct App {
    pub session: Box<dyn Session>,
    pub timeline: Timeline,
    pub causality: Causality,
    pub node_names: Vec<String>,
    /// The selected row of the event list.
    pub sel: usize,
    pub view: View,
    pub input: Input,
    count: Option<usize>,
    pub breakpoints: Vec<(String, Predicate)>,
    pub highlight: Option<Highlight>,
    pub bookmarks: BTreeMap<String, usize>,
    /// Feedback from the last action, shown on the status line.
    pub message: Option<String>,
    pub last_search: Option<String>,
    pub detail: Detail,
    pub detail_scroll: u16,
    /// Diagram: characters per lane (0: what fits), first lane shown, events per row (time
    /// zoom).
    pub lane_width: u16,
    /// The lane width last drawn (kept by the renderer): `+` and `-` start from what the
    /// user sees, not from the setting's zero.
    pub lane_width_shown: u16,
    pub lane_offset: usize,
    pub zoom: usize,
    /// First row shown by the list (kept by the renderer so the selection stays in view).
    pub list_top: usize,
    pub profile: Option<RequestProfile>,
    /// `I`: the inevitability curve, measured once per trace.
    pub curve: Option<retrace_replayer::inevitable::Curve>,
    pub profile_sel: usize,
    pub quit: bool,
    /// Simulated traces have virtual time; recordings wall time.
    pub virtual_time: bool,
    /// A fork's first simulated record (`retrace fork`): where the trace branched from the
    /// run it continues. Only for a trace opened whole (a window numbers its own records).
    pub branch_at: Option<usize>,
    /// Where the trace's faults and drops are, for lighting those a history saw.
    fault_index: FaultIndex,
    /// The key, reach and step of the history last shown (`w` again clears it).
    history_key: Option<(Direction, Reach, usize)>,
    /// `v`: the value picker and the value's story.
    pub value: Option<ValueView>,
    /// The diagram's vertical axis: `None` is event order; `Some(ns)` is time, one line
    /// per `ns` (`t` toggles; `z`/`Z` zoom it).
    pub time_axis_ns: Option<u64>,
    /// For a window of a larger trace: where it sits, and the windows around it.
    pub pager: Option<Box<dyn Pager>>,
    /// `f`: the what-if panel being filled in.
    pub what_if: Option<WhatIf>,
    /// The original run and the what-if branches made from it.
    pub branches: Branches,
    /// The trace file the original run was read from (a saved branch's schedule names it).
    pub source: Option<PathBuf>,
}

impl App {
    /// Lanes of the diagram: one per node, then one per service the nodes call.
    pub fn lane_count(&self) -> usize {
        self.node_names.len() + self.timeline.services.len()
    }

    /// Opens a session at the interesting place: a recorded invariant violation, else the
    /// first divergence or violation re-execution meets within [`OPEN_SCAN_BUDGET`], else
    /// the start. The trace must hold at least one event.
    pub fn new(session: Box<dyn Session>) -> App {
        Self::with_scan_budget(session, OPEN_SCAN_BUDGET)
    }

    pub fn with_scan_budget(mut session: Box<dyn Session>, budget: Duration) -> App {
        let recorded_violation = recorded_violation(session.as_ref());
        let mut message = None;
        let start_at = match recorded_violation {
            Some(index) => Some(index),
            None => match session.scan(budget) {
                Scan::Violation(step) => Some(session.steps().steps[step].input),
                Scan::Finished => session.divergence().map(|d| d.record_index),
                Scan::OutOfTime => {
                    message = Some(format!(
                        "re-executed {} of {} steps while opening: no divergence or violation so far",
                        session.position(),
                        session.steps().len()
                    ));
                    None
                }
            },
        };
        let mut app = Self::opened(session, start_at, recorded_violation);
        // Selecting may have said something already (the replay diverged before it).
        if app.message.is_none() {
            app.message = message.or_else(|| {
                start_at.map(|_| "opened at the first problem: `w` shows what led here".into())
            });
        }
        app
    }

    /// Opens a window of a larger trace at its record `select`, with the pager that opens
    /// the windows around it. No scan: the window was opened where the user asked.
    pub fn in_window(page: Page, pager: Box<dyn Pager>) -> App {
        let recorded_violation = recorded_violation(page.session.as_ref());
        let mut app = Self::opened(page.session, Some(page.select), recorded_violation);
        app.pager = Some(pager);
        app.message.get_or_insert(page.line);
        app
    }

    /// The app over `session`, its record `start_at` selected.
    pub(crate) fn opened(
        session: Box<dyn Session>,
        start_at: Option<usize>,
        recorded_violation: Option<usize>,
    ) -> App {
        let trace = session.trace();
        assert!(
            !trace.events.is_empty(),
            "the TUI needs a trace with at least one event (callers check)"
        );
        let node_names: Vec<String> = trace.header.node_names();
        let services = retrace_sim::scenario::service_names(&trace.header.scenario_toml);
        let timeline = Timeline::new(&trace.events, node_names.len(), services);
        let causality = Causality::new(session.steps(), &trace.events, node_names.len());
        let fault_index = FaultIndex::new(&trace.events);
        let virtual_time = trace.header.origin.virtual_time();
        let branch_at = trace.header.origin.branch_at().map(|at| at as usize);
        let mut app = App {
            session,
            timeline,
            causality,
            node_names,
            sel: 0,
            view: View::Main,
            input: Input::Normal,
            count: None,
            breakpoints: Vec::new(),
            highlight: None,
            bookmarks: BTreeMap::new(),
            message: None,
            last_search: None,
            detail: Detail {
                step: None,
                states: StepStates::default(),
            },
            detail_scroll: 0,
            lane_width: 0,
            lane_width_shown: 0,
            lane_offset: 0,
            zoom: 1,
            list_top: 0,
            profile: None,
            curve: None,
            profile_sel: 0,
            quit: false,
            virtual_time,
            branch_at,
            fault_index,
            history_key: None,
            value: None,
            time_axis_ns: None,
            pager: None,
            what_if: None,
            branches: Branches::default(),
            source: None,
        };
        let violation_at = recorded_violation.or(match start_at {
            Some(i) if app.session.divergence().is_none_or(|d| d.record_index != i) => Some(i),
            _ => None,
        });
        app.add_opening_bookmarks(violation_at);
        let row = start_at.map_or(0, |i| app.timeline.row_of(i));
        app.select(row);
        // Known once the cursor has re-executed up to the violation.
        app.add_witness_bookmarks();
        app
    }

    /// `(`, `)`, `:window N`: the app over another window of the trace, keeping what the
    /// user set up that does not depend on the window (breakpoints, the diagram's shape).
    fn page(&mut self, toward: Toward) {
        let Some(pager) = self.pager.as_mut() else {
            self.message = Some(
                "the whole trace is open: windows are for traces opened a window at a time".into(),
            );
            return;
        };
        let page = match pager.open(toward) {
            Ok(Some(page)) => page,
            Ok(None) => {
                self.message = Some(match toward {
                    Toward::Before => "this window starts at the trace's start".into(),
                    _ => "this window ends at the trace's end".into(),
                });
                return;
            }
            Err(e) => {
                self.message = Some(e);
                return;
            }
        };
        let pager = self.pager.take().expect("checked above");
        let mut next = App::in_window(page, pager);
        self.hand_setup_to(&mut next);
        *self = next;
    }

    /// Moves to `next` (the app over another window or run) what the user set up that does
    /// not depend on the trace: breakpoints, the last search, the diagram's shape.
    pub(crate) fn hand_setup_to(&mut self, next: &mut App) {
        next.breakpoints = std::mem::take(&mut self.breakpoints);
        next.last_search = self.last_search.take();
        next.lane_width = self.lane_width;
        next.lane_offset = self.lane_offset;
        next.zoom = self.zoom;
        next.time_axis_ns = self.time_axis_ns;
    }

    /// The bookmarks every trace opens with, whatever wrote it: `violation`, `divergence`
    /// (where replay stopped agreeing with the trace), and each crash: `crash` for the
    /// first, `crash-2`, `crash-3`… in order, and `crash-NODE` for each node's first.
    fn add_opening_bookmarks(&mut self, violation_at: Option<usize>) {
        let mut marks: Vec<(String, usize)> = Vec::new();
        if let Some(i) = violation_at {
            marks.push(("violation".into(), i));
        }
        if let Some(d) = self.session.divergence() {
            marks.push(("divergence".into(), d.record_index));
        }
        let crashes: Vec<(usize, NodeId)> = self
            .session
            .trace()
            .events
            .iter()
            .filter_map(|e| match e.record {
                Record::Crash { node, .. } => Some((e.index as usize, node)),
                _ => None,
            })
            .collect();
        for (k, &(i, node)) in crashes.iter().enumerate() {
            let name = if k == 0 {
                "crash".into()
            } else {
                format!("crash-{}", k + 1)
            };
            marks.push((name, i));
            if let Some(n) = self.node_names.get(node.index()) {
                let per_node = format!("crash-{n}");
                if !marks.iter().any(|(m, _)| *m == per_node) {
                    marks.push((per_node, i));
                }
            }
        }
        for (name, i) in marks {
            let row = self.timeline.row_of(i);
            self.bookmarks.insert(name, row);
        }
    }

    /// `op-rN` at the external request of each operation a violation names (its
    /// `requests` fact: a linearizability witness).
    fn add_witness_bookmarks(&mut self) {
        let mut marks: Vec<(String, usize)> = Vec::new();
        let named: Vec<String> = self
            .session
            .first_violation()
            .and_then(|v| {
                v.facts
                    .iter()
                    .find(|(name, _)| name == "requests")
                    .map(|(_, list)| list.split_whitespace().map(str::to_string).collect())
            })
            .unwrap_or_default();
        if !named.is_empty() {
            for e in &self.session.trace().events {
                if let Record::External { request, .. } = e.record {
                    let name = request.to_string();
                    if named.contains(&name) {
                        marks.push((format!("op-{name}"), e.index as usize));
                    }
                }
            }
        }
        for (name, i) in marks {
            let row = self.timeline.row_of(i);
            self.bookmarks.insert(name, row);
        }
    }

    // ----- what the selection is -----

    pub fn rows(&self) -> usize {
        self.timeline.rows.len()
    }

    /// The trace index of a row's event.
    pub fn record_of(&self, row: usize) -> usize {
        self.timeline.rows[row]
    }

    /// The step a row shows the state after (its own, or the last before it).
    pub fn step_of_row(&self, row: usize) -> Option<usize> {
        self.session.steps().step_at_or_before(self.record_of(row))
    }

    /// The step a row *is* (None for world events).
    pub fn own_step(&self, row: usize) -> Option<usize> {
        let i = self.record_of(row);
        let s = self.session.steps().step_at_or_before(i)?;
        (self.session.steps().steps[s].input == i).then_some(s)
    }

    /// The node a row's event happens on (for a drop or duplicate, the message's receiver).
    pub fn node_of_row(&self, row: usize) -> Option<NodeId> {
        let events = &self.session.trace().events;
        let e = &events[self.record_of(row)];
        match &e.record {
            Record::Drop { send, .. } | Record::Duplicate { send } => {
                match events.get(*send as usize).map(|e| &e.record) {
                    Some(Record::Send { to, .. }) => Some(*to),
                    _ => None,
                }
            }
            Record::Fault(retrace_sim::trace::FaultRecord::ClockJump { node, .. }) => Some(*node),
            _ => e.node,
        }
    }

    /// The request ids of a row's event.
    pub fn requests_of_row(&self, row: usize) -> Vec<RequestId> {
        self.session.trace().events[self.record_of(row)]
            .record
            .request_ids()
            .to_vec()
    }

    /// One dense line for a row: index, time, node, kind, what.
    pub fn row_text(&self, row: usize) -> String {
        let trace = self.session.trace();
        let e = &trace.events[self.record_of(row)];
        let describe = crate::session::Described(&*self.session);
        format!(
            "{:>7} {:>10} {:<10} {:<9} {}",
            e.index,
            crate::ui::short_time(e.time_ns.saturating_sub(self.timeline.base_ns)),
            e.node.map(|n| self.node_name(n)).unwrap_or_default(),
            e.record.kind(),
            event_detail(&trace.header, e, &describe)
        )
    }

    pub fn node_name(&self, n: NodeId) -> String {
        self.node_names
            .get(n.index())
            .cloned()
            .unwrap_or_else(|| n.to_string())
    }

    // ----- moving -----

    /// Selects a row and moves the replay there.
    pub fn select(&mut self, row: usize) {
        let row = row.min(self.rows().saturating_sub(1));
        self.sel = row;
        let step = self.step_of_row(row);
        if step != self.detail.step || self.session.position() != step.map_or(0, |s| s + 1) {
            self.detail = Detail {
                step,
                states: match step {
                    Some(s) => self.session.step_states(s),
                    None => {
                        self.session.goto(0);
                        StepStates::default()
                    }
                },
            };
            self.detail_scroll = 0;
        }
        // The replay stops at a divergence: the selection cannot go past it either.
        if let Some(d) = self.session.divergence() {
            if step.is_some_and(|s| s > d.step) {
                let row = self.timeline.row_of(d.input_index);
                self.sel = row;
                self.message = Some("the replay diverged here: it cannot go further".into());
            }
        }
    }

    fn select_step(&mut self, step: usize) {
        let input = self.session.steps().steps[step].input;
        let row = self.timeline.row_of(input);
        self.select(row);
    }

    fn take_count(&mut self) -> usize {
        self.count.take().unwrap_or(1)
    }

    fn step_rows(&mut self, by: isize) {
        let target = (self.sel as isize + by).clamp(0, self.rows() as isize - 1);
        let at_edge = target as usize == self.sel && by != 0;
        self.select(target as usize);
        if at_edge && self.pager.is_some() {
            self.message = Some(if by > 0 {
                "the end of this window: `)` opens the next one".into()
            } else {
                "the start of this window: `(` opens the one before".into()
            });
        }
    }

    fn on_node(&mut self, direction: Direction, times: usize) {
        let forward = direction == Direction::Forward;
        let Some(node) = self.node_of_row(self.sel) else {
            self.message = Some("this event is on no node".into());
            return;
        };
        let mut row = self.sel;
        for _ in 0..times {
            let next = if forward {
                (row + 1..self.rows()).find(|&r| self.node_of_row(r) == Some(node))
            } else {
                (0..row).rev().find(|&r| self.node_of_row(r) == Some(node))
            };
            match next {
                Some(r) => row = r,
                None => {
                    self.message = Some(format!(
                        "no {} event on {}",
                        if forward { "later" } else { "earlier" },
                        self.node_name(node)
                    ));
                    break;
                }
            }
        }
        self.select(row);
    }

    /// Any of the breakpoints: what `c` continues to, and where a what-if branch opens.
    pub(crate) fn breakpoint_predicate(&self) -> Predicate {
        Predicate::Any(self.breakpoints.iter().map(|(_, p)| p.clone()).collect())
    }

    fn continue_to_break(&mut self, direction: Direction, times: usize) {
        let forward = direction == Direction::Forward;
        let pred = self.breakpoint_predicate();
        // Start from the selected row's state.
        let step = self.step_of_row(self.sel);
        self.session.goto(step.map_or(0, |s| s + 1));
        let mut hit = false;
        for _ in 0..times {
            hit = if forward {
                self.session.run_forward_until(&pred)
            } else {
                self.session.run_backward_until(&pred)
            };
            if !hit {
                break;
            }
        }
        let pos = self.session.position();
        self.message = Some(match (hit, self.breakpoints.is_empty()) {
            (true, _) => {
                let which: Vec<&str> = self
                    .breakpoints
                    .iter()
                    .filter(|(_, p)| self.session.holds(p))
                    .map(|(t, _)| t.as_str())
                    .collect();
                format!("breakpoint: {}", which.join(", "))
            }
            (false, true) if forward => {
                "no breakpoints (`:break PREDICATE`): ran to the end".into()
            }
            (false, true) => "no breakpoints (`:break PREDICATE`): back at the start".into(),
            (false, false) if forward => "no breakpoint hit before the end".into(),
            (false, false) => "no breakpoint hit before the start".into(),
        });
        match pos.checked_sub(1) {
            Some(s) if hit || forward => self.select_step(s),
            _ if !forward => self.select(if hit { self.sel } else { 0 }),
            _ => self.select(self.rows().saturating_sub(1)),
        }
    }

    /// Next or previous highlighted row.
    fn next_highlighted(&mut self, direction: Direction, times: usize) {
        let forward = direction == Direction::Forward;
        let Some(h) = &self.highlight else {
            self.message = Some("nothing highlighted: `w` (why), `r` (request), `:effects`".into());
            return;
        };
        let cur = self.step_of_row(self.sel);
        let mut target = None;
        let mut from = cur;
        for _ in 0..times {
            let next = if forward {
                let k = from.map_or(0, |c| h.steps.partition_point(|&s| s <= c));
                h.steps.get(k).copied()
            } else {
                let k = from.map_or(0, |c| h.steps.partition_point(|&s| s < c));
                k.checked_sub(1).map(|k| h.steps[k])
            };
            match next {
                Some(s) => {
                    target = Some(s);
                    from = Some(s);
                }
                None => break,
            }
        }
        match target {
            Some(s) => self.select_step(s),
            None => {
                self.message = Some(format!(
                    "no {} highlighted event",
                    if forward { "later" } else { "earlier" }
                ))
            }
        }
    }

    fn search(&mut self, direction: Direction, times: usize) {
        let forward = direction == Direction::Forward;
        let Some(text) = self.last_search.clone() else {
            self.message = Some("no search yet: `/` searches the event list".into());
            return;
        };
        let needle = text.to_lowercase();
        let mut row = self.sel;
        for _ in 0..times {
            let found = if forward {
                (row + 1..self.rows()).find(|&r| self.row_text(r).to_lowercase().contains(&needle))
            } else {
                (0..row)
                    .rev()
                    .find(|&r| self.row_text(r).to_lowercase().contains(&needle))
            };
            match found {
                Some(r) => row = r,
                None => {
                    self.message = Some(format!(
                        "`{text}` not found {}",
                        if forward { "below" } else { "above" }
                    ));
                    break;
                }
            }
        }
        self.select(row);
    }

    // ----- causality -----

    /// The step the causality keys ask about: the selected event's own, or the last before it.
    pub(crate) fn causal_step(&self) -> Option<usize> {
        self.own_step(self.sel).or(self.step_of_row(self.sel))
    }

    /// Whether a row is lit: every row without a highlight; with one, its steps and the
    /// world records (faults) it names.
    pub fn lit(&self, row: usize) -> bool {
        match &self.highlight {
            None => true,
            Some(h) => match self.own_step(row) {
                Some(s) => h.contains(s),
                None => h.records.binary_search(&self.record_of(row)).is_ok(),
            },
        }
    }

    /// What `w` and `e` narrow a history to: the steps of the event's requests, else those
    /// of the value being followed (`v`); `None` when there is nothing to narrow by.
    fn focus(&self, s: usize) -> Option<(String, Vec<usize>)> {
        let row = self.timeline.row_of(self.session.steps().steps[s].input);
        let requests = self.requests_of_row(row);
        if !requests.is_empty() {
            let mut steps: Vec<usize> = requests
                .iter()
                .flat_map(|&r| self.causality.request(r).iter().copied())
                .collect();
            steps.sort_unstable();
            steps.dedup();
            let names: Vec<String> = requests.iter().map(|r| r.to_string()).collect();
            return Some((format!("request {}", names.join(", ")), steps));
        }
        self.value
            .as_ref()
            .and_then(|v| v.answer.as_ref())
            .map(|a| (format!("value {}", a.value), a.steps.clone()))
    }

    /// `w` / `W` (`back`) and `e` / `E`: the causal history of the selected event, or what
    /// it caused — narrowed to its request or the followed value unless `all`. A history
    /// also lights the faults that changed what its steps saw.
    fn history(&mut self, direction: Direction, reach: Reach) {
        let back = direction == Direction::Backward;
        let Some(s) = self.causal_step() else {
            return;
        };
        let full = if back {
            self.causality.why(s)
        } else {
            self.causality.effects(s)
        };
        let input = self.session.steps().steps[s].input;
        let (word, key_all) = if back {
            ("why", 'W')
        } else {
            ("effects of", 'E')
        };
        let focus = match reach {
            Reach::All => None,
            Reach::Narrow => self.focus(s),
        };
        let (mut steps, label, said) = match focus {
            Some((name, set)) => {
                let narrowed: Vec<usize> = full
                    .iter()
                    .copied()
                    .filter(|x| set.binary_search(x).is_ok())
                    .collect();
                let said = format!(
                    "{} of the {} {} events are {name}'s (`{key_all}`: all of them)",
                    narrowed.len(),
                    full.len(),
                    if back { "earlier" } else { "later" },
                );
                (narrowed, format!("{word} #{input} ({name})"), said)
            }
            None => {
                let said = format!(
                    "{} {}",
                    full.len(),
                    if back {
                        "earlier events led to this one"
                    } else {
                        "later events follow from this one"
                    }
                );
                (full, format!("{word} #{input}"), said)
            }
        };
        let at = steps.partition_point(|&x| x < s);
        steps.insert(at, s);
        let records: Vec<usize> = if back {
            self.fault_index
                .causes(
                    &self.causality,
                    self.session.steps(),
                    &self.session.trace().events,
                    s,
                )
                .into_iter()
                .filter(|f| steps.binary_search(&f.affected_step).is_ok())
                .map(|f| f.record)
                .collect()
        } else {
            Vec::new()
        };
        let faults = if records.is_empty() {
            String::new()
        } else {
            format!(
                "; {} fault{} changed what they saw",
                records.len(),
                if records.len() == 1 { "" } else { "s" }
            )
        };
        self.message = Some(format!(
            "{said}{faults} (`]`/`[` move through them, again: clear)"
        ));
        self.highlight = Some(Highlight {
            label,
            steps,
            records,
        });
        self.history_key = Some((direction, reach, s));
    }

    /// The selected event's causal history, narrowed to its request or followed value.
    pub fn why(&mut self) {
        self.history(Direction::Backward, Reach::Narrow);
    }

    /// What the selected event caused, narrowed like [`App::why`].
    pub fn effects(&mut self) {
        self.history(Direction::Forward, Reach::Narrow);
    }

    /// `w`, `W`, `e`, `E`: the history, or clear it when the same key is pressed again on
    /// the same event.
    fn toggle_history(&mut self, direction: Direction, reach: Reach) {
        let same =
            self.history_key == Some((direction, reach, self.causal_step().unwrap_or(usize::MAX)));
        if same && self.highlight.is_some() {
            self.highlight = None;
            self.history_key = None;
        } else {
            self.history(direction, reach);
        }
    }

    pub fn follow_request(&mut self, r: RequestId) {
        let mut steps = self.causality.request(r).to_vec();
        steps.sort_unstable();
        if steps.is_empty() {
            self.message = Some(format!("no event carries request {r}"));
            return;
        }
        let nodes: std::collections::BTreeSet<usize> = steps
            .iter()
            .map(|&s| self.session.steps().steps[s].node.index())
            .collect();
        self.message = Some(format!(
            "request {r}: {} events on {} nodes",
            steps.len(),
            nodes.len()
        ));
        self.highlight = Some(Highlight {
            label: format!("request {r}"),
            steps,
            records: Vec::new(),
        });
    }

    pub fn open_profile(&mut self, r: Option<RequestId>) {
        let r = match r.or_else(|| self.requests_of_row(self.sel).first().copied()) {
            Some(r) => r,
            None => {
                self.message = Some("this event belongs to no request: `:profile ID`".into());
                return;
            }
        };
        let trace = self.session.trace();
        let profiler = Profiler::new(
            &trace.events,
            self.session.steps(),
            &self.causality,
            &self.node_names,
        );
        match profiler.request(r) {
            Some(p) => {
                self.profile = Some(p);
                self.profile_sel = 0;
                self.view = View::Profile;
            }
            None => {
                self.message = Some(format!(
                    "request {r} has no reply in this trace: nothing to profile"
                ))
            }
        }
    }

    /// `t`: the diagram's vertical axis between event order and time. In time, a line is a
    /// slice of the run (to start, the median gap between events, so busy stretches stay
    /// readable) and long quiet stretches are folded into one line that says how long.
    fn toggle_time_axis(&mut self) {
        if self.time_axis_ns.take().is_some() {
            self.message = Some("diagram: one row per event".into());
            return;
        }
        let ns = self
            .timeline
            .median_gap_ns(&self.session.trace().events)
            .max(1);
        self.time_axis_ns = Some(ns);
        self.message = Some(format!(
            "diagram: {} time, a line per {} (`z`/`Z` zoom, `t` back to event order)",
            if self.virtual_time { "virtual" } else { "wall" },
            retrace_sim::format_ns(ns)
        ));
    }

    // ----- keys -----

    /// The lane width in force: the user's, or the one last drawn.
    fn current_lane_width(&self) -> u16 {
        match self.lane_width {
            0 => self.lane_width_shown.max(3),
            w => w,
        }
    }

    /// Presses keys written as text — plain characters, and `<Enter>`, `<Esc>`, `<Up>`,
    /// `<Down>`, `<Left>`, `<Right>`, `<Backspace>` — for tests, benchmarks and scripted
    /// openings. A `<` that starts no key name is the character.
    pub fn press(&mut self, text: &str) {
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            let named = rest.find('>').and_then(|end| {
                let code = match &rest[..=end] {
                    "<Enter>" => KeyCode::Enter,
                    "<Esc>" => KeyCode::Esc,
                    "<Down>" => KeyCode::Down,
                    "<Up>" => KeyCode::Up,
                    "<Left>" => KeyCode::Left,
                    "<Right>" => KeyCode::Right,
                    "<Backspace>" => KeyCode::Backspace,
                    _ => return None,
                };
                Some((code, end + 1))
            });
            match named {
                Some((code, len)) if c == '<' => {
                    self.key(KeyEvent::from(code));
                    rest = &rest[len..];
                }
                _ => {
                    self.key(KeyEvent::from(KeyCode::Char(c)));
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
    }

    /// What to show while `key` is handled, when handling it takes long enough to be seen:
    /// opening another window of a larger trace (half a second to a second, more far from
    /// any state), or a what-if. The terminal draws it before handing the key over.
    pub fn slow_key(&self, key: &KeyEvent) -> Option<String> {
        // What-if re-executes the run to the moment, then runs the branch to its end: a
        // second or more on a long trace.
        match (&self.input, self.view, key.code) {
            (Input::Normal, View::Main, KeyCode::Char('f')) if self.pager.is_none() => {
                return Some("what if: re-executing the run to this event…".into())
            }
            (Input::Normal, View::WhatIf, KeyCode::Enter) => {
                return Some("running the branch to its violation or the scenario's end…".into())
            }
            _ => {}
        }
        self.pager.as_ref()?;
        let toward = match (&self.input, key.code) {
            (Input::Normal, KeyCode::Char('(')) if self.view == View::Main => "before",
            (Input::Normal, KeyCode::Char(')')) if self.view == View::Main => "after",
            (Input::Command(line), KeyCode::Enter) if line.trim_start().starts_with("window") => {
                "asked for"
            }
            _ => return None,
        };
        Some(format!(
            "opening the window {toward}: re-executing from the nearest state…"
        ))
    }

    /// Handles one key press.
    pub fn key(&mut self, key: KeyEvent) {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        match self.input.clone() {
            Input::Command(line) => match edit_line(line, key.code) {
                Edit::Done(line) => {
                    self.input = Input::Normal;
                    self.run_command(&line);
                }
                Edit::Cancel => self.input = Input::Normal,
                Edit::Editing(line) => self.input = Input::Command(line),
            },
            Input::Search(line) => match edit_line(line, key.code) {
                Edit::Done(line) => {
                    self.input = Input::Normal;
                    if !line.is_empty() {
                        self.last_search = Some(line);
                    }
                    self.search(Direction::Forward, 1);
                }
                Edit::Cancel => self.input = Input::Normal,
                Edit::Editing(line) => self.input = Input::Search(line),
            },
            Input::Normal => match self.view {
                View::Help => {
                    if matches!(key.code, KeyCode::Esc | KeyCode::Char('q' | '?')) {
                        self.view = View::Main;
                    }
                }
                View::Profile => self.profile_key(key),
                View::Inevitable => self.inevitable_key(key),
                View::Value => self.value_key(key),
                View::WhatIf => self.what_if_key(key),
                View::Branches => self.branches_key(key),
                View::Main => self.main_key(key),
            },
        }
    }

    /// `I`: measures the curve (once: forks of the run with the model's code, a few
    /// seconds on a long trace) and shows it.
    fn open_inevitable(&mut self) {
        if self.curve.is_none() {
            let settings = retrace_replayer::inevitable::Settings::default();
            match self.session.inevitable(settings) {
                Ok(curve) => self.curve = Some(curve),
                Err(e) => {
                    self.message = Some(e);
                    return;
                }
            }
        }
        self.view = View::Inevitable;
    }

    fn inevitable_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Esc | KeyCode::Char('q' | 'I') => self.view = View::Main,
            KeyCode::Enter => {
                let step = self.curve.as_ref().and_then(|c| c.named_step());
                let input = step.and_then(|s| self.session.steps().steps.get(s).map(|s| s.input));
                match input {
                    Some(input) => {
                        let row = self.timeline.row_of(input);
                        self.view = View::Main;
                        self.select(row);
                    }
                    None => self.message = Some("the curve names no step: it is flat".into()),
                }
            }
            KeyCode::Char('?') => self.view = View::Help,
            _ => {}
        }
    }

    fn profile_key(&mut self, key: KeyEvent) {
        let hops = self.profile.as_ref().map_or(0, |p| p.path.len());
        match key.code {
            KeyCode::Esc | KeyCode::Char('q' | 'p') => self.view = View::Main,
            KeyCode::Char('j') | KeyCode::Down => {
                self.profile_sel = (self.profile_sel + 1).min(hops.saturating_sub(1))
            }
            KeyCode::Char('k') | KeyCode::Up => {
                self.profile_sel = self.profile_sel.saturating_sub(1)
            }
            KeyCode::Enter => {
                if let Some(h) = self
                    .profile
                    .as_ref()
                    .and_then(|p| p.path.get(self.profile_sel))
                {
                    let row = self.timeline.row_of(h.event);
                    self.view = View::Main;
                    self.select(row);
                }
            }
            KeyCode::Char('?') => self.view = View::Help,
            _ => {}
        }
    }

    fn main_key(&mut self, key: KeyEvent) {
        if let KeyCode::Char(c @ '0'..='9') = key.code {
            if c != '0' || self.count.is_some() {
                let d = c as usize - '0' as usize;
                self.count = Some((self.count.unwrap_or(0) * 10 + d).min(COUNT_MAX));
                return;
            }
        }
        self.message = None;
        let counted = self.count.is_some();
        let n = self.take_count();
        match key.code {
            KeyCode::Char('j') | KeyCode::Down => self.step_rows(n as isize),
            KeyCode::Char('k') | KeyCode::Up => self.step_rows(-(n as isize)),
            KeyCode::PageDown => self.step_rows(20 * n as isize),
            KeyCode::PageUp => self.step_rows(-20 * n as isize),
            KeyCode::Char('l') | KeyCode::Right => self.on_node(Direction::Forward, n),
            KeyCode::Char('h') | KeyCode::Left => self.on_node(Direction::Backward, n),
            KeyCode::Char('g') | KeyCode::Home => self.select(0),
            KeyCode::Char('G') | KeyCode::End => {
                if counted {
                    let row = self.timeline.row_of(n);
                    self.select(row);
                } else {
                    self.select(self.rows().saturating_sub(1));
                }
            }
            KeyCode::Char('c') => self.continue_to_break(Direction::Forward, n),
            KeyCode::Char('C') => self.continue_to_break(Direction::Backward, n),
            KeyCode::Char('n') => self.search(Direction::Forward, n),
            KeyCode::Char('N') => self.search(Direction::Backward, n),
            KeyCode::Char(']') => self.next_highlighted(Direction::Forward, n),
            KeyCode::Char('[') => self.next_highlighted(Direction::Backward, n),
            KeyCode::Char('w') => self.toggle_history(Direction::Backward, Reach::Narrow),
            KeyCode::Char('W') => self.toggle_history(Direction::Backward, Reach::All),
            KeyCode::Char('e') => self.toggle_history(Direction::Forward, Reach::Narrow),
            KeyCode::Char('E') => self.toggle_history(Direction::Forward, Reach::All),
            KeyCode::Char('v') => self.open_value(),
            KeyCode::Char('t') => self.toggle_time_axis(),
            KeyCode::Char('r') => match self.requests_of_row(self.sel).first() {
                Some(&r) => self.follow_request(r),
                None => self.message = Some("this event belongs to no request".into()),
            },
            KeyCode::Char('p') => self.open_profile(None),
            KeyCode::Char('I') => self.open_inevitable(),
            KeyCode::Char('f') => self.open_what_if(),
            KeyCode::Char('b') => self.open_branches(),
            KeyCode::Char('o') => self.back_to_original(),
            KeyCode::Esc => self.highlight = None,
            KeyCode::Char(':') => self.input = Input::Command(String::new()),
            KeyCode::Char('/') => self.input = Input::Search(String::new()),
            KeyCode::Char('?') => self.view = View::Help,
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('+') => self.lane_width = (self.current_lane_width() + 1).min(24),
            KeyCode::Char('-') => {
                self.lane_width = self.current_lane_width().saturating_sub(1).max(2)
            }
            KeyCode::Char('z') => match &mut self.time_axis_ns {
                Some(ns) => *ns = ns.saturating_mul(2).min(1 << 50),
                None => self.zoom = (self.zoom * 2).min(1 << 20),
            },
            KeyCode::Char('Z') => match &mut self.time_axis_ns {
                Some(ns) => *ns = (*ns / 2).max(1),
                None => self.zoom = (self.zoom / 2).max(1),
            },
            KeyCode::Char('>') => {
                self.lane_offset = (self.lane_offset + 1).min(self.lane_count().saturating_sub(1))
            }
            KeyCode::Char('<') => self.lane_offset = self.lane_offset.saturating_sub(1),
            KeyCode::Char(')') => self.page(Toward::After),
            KeyCode::Char('(') => self.page(Toward::Before),
            KeyCode::Char('}') => self.detail_scroll = self.detail_scroll.saturating_add(5),
            KeyCode::Char('{') => self.detail_scroll = self.detail_scroll.saturating_sub(5),
            _ => {}
        }
    }

    /// Runs one `:` command line.
    pub fn run_command(&mut self, line: &str) {
        let cmd = match Command::parse(line) {
            Ok(c) => c,
            Err(e) => {
                self.message = Some(e);
                return;
            }
        };
        match cmd {
            Command::GotoEvent(i) => {
                let len = self.session.trace().events.len();
                if i >= len {
                    self.message = Some(format!("no event {i}: the trace has {len}"));
                } else {
                    let row = self.timeline.row_of(i);
                    self.select(row);
                }
            }
            Command::GotoTime(ns) => {
                let at = self.timeline.base_ns.saturating_add(ns);
                let trace = self.session.trace();
                let row = self
                    .timeline
                    .rows
                    .partition_point(|&i| trace.events[i].time_ns < at);
                self.select(row.min(self.rows().saturating_sub(1)));
            }
            Command::GotoBookmark(name) => match self.bookmarks.get(&name) {
                Some(&row) => self.select(row),
                None => {
                    let names: Vec<&str> = self.bookmarks.keys().map(String::as_str).collect();
                    self.message = Some(format!(
                        "no bookmark `{name}`; bookmarks: {}",
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    ));
                }
            },
            Command::Break(None) => {
                self.message = Some(if self.breakpoints.is_empty() {
                    "no breakpoints; add one with `:break invariant`, `:break node NAME`, `:break msg VARIANT`, ...".into()
                } else {
                    let list: Vec<String> = self
                        .breakpoints
                        .iter()
                        .enumerate()
                        .map(|(i, (t, _))| format!("{}: {t}", i + 1))
                        .collect();
                    list.join("  ")
                });
            }
            Command::Break(Some(text)) => match Predicate::parse(&text, &self.node_names) {
                Ok(p) => {
                    self.breakpoints.push((text.clone(), p));
                    self.message = Some(format!(
                        "breakpoint {}: {text} (`c` continues to it)",
                        self.breakpoints.len()
                    ));
                }
                Err(e) => self.message = Some(e),
            },
            Command::Delete(None) => {
                self.breakpoints.clear();
                self.message = Some("all breakpoints deleted".into());
            }
            Command::Delete(Some(n)) => {
                if n >= 1 && n <= self.breakpoints.len() {
                    let (t, _) = self.breakpoints.remove(n - 1);
                    self.message = Some(format!("deleted breakpoint {n}: {t}"));
                } else {
                    self.message = Some(format!("no breakpoint {n}"));
                }
            }
            Command::Why => self.why(),
            Command::Effects => self.effects(),
            Command::Provenance(text) => self.follow_value_text(&text),
            Command::Request(r) => self.follow_request(r),
            Command::Clear => self.highlight = None,
            Command::Bookmark(name) => {
                self.message = Some(format!(
                    "bookmark `{name}` at event {}",
                    self.record_of(self.sel)
                ));
                self.bookmarks.insert(name, self.sel);
            }
            Command::Profile(r) => self.open_profile(r),
            Command::Window(i) => self.page(Toward::Around(i)),
            Command::Save(path) => self.save_branch(&path),
            Command::Help => self.view = View::Help,
            Command::Quit => self.quit = true,
        }
    }
}
