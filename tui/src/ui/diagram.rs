//! The space-time diagram: one lane per node, time flowing down, one row per event (or per
//! `zoom` events), an arrow from the sender's lane to the receiver's at each delivery, drops
//! and crashes marked, the causal highlight bright and the rest dimmed. Each service the
//! nodes call (a black box: Redis, a database) is a lane after the nodes', its lifeline
//! dashed: a node's writes to it are dotted lines into it, its answers lines out of it. On the time axis
//! (`t`) a line is a slice of time instead: quiet stretches show as a couple of empty lines
//! and then one folded line saying how long (a 180 ms failover is visible, not 180 lines).

use super::{cells_line, fit, short_name, style};
use crate::app::App;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;
use retrace_sim::trace::{FaultRecord, Record};
use retrace_sim::{ConnId, NodeId};

/// How strongly a mark claims a lane when several events share a row (zoomed out).
fn rank(c: char) -> u8 {
    match c {
        '!' => 9,
        '×' => 8,
        '✗' => 7,
        '▲' | '△' => 6,
        '◆' => 5,
        '#' | '±' => 4,
        '●' => 3,
        '○' => 2,
        '+' => 1,
        _ => 0,
    }
}

struct Lanes {
    first: usize,
    count: usize,
    width: usize,
}

impl Lanes {
    /// The column of a node's lifeline, if its lane is shown.
    fn col(&self, node: NodeId) -> Option<usize> {
        let k = node.index().checked_sub(self.first)?;
        (k < self.count).then(|| k * self.width + self.width / 2)
    }

    fn clamp_col(&self, node: NodeId) -> usize {
        match node.index().checked_sub(self.first) {
            None => 0,
            Some(k) if k >= self.count => self.count * self.width - 1,
            Some(k) => k * self.width + self.width / 2,
        }
    }
}

/// One line of the diagram: the rows `lo..hi` (possibly none: a quiet slice of time), or
/// a folded quiet stretch of `ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slice {
    Rows { lo: usize, hi: usize },
    Quiet { ns: u64 },
}

/// Quiet lines drawn before a quiet stretch is folded into one line saying how long.
const QUIET_LINES_MAX: usize = 2;

/// The diagram's lines on a time axis of `unit_ns` per line, from row `from` until the
/// line after row `until`'s plus `after` more (or the end of the run). Bounded: at most
/// three lines per row (its slice, and two quiet lines and a fold before it).
fn time_slices(app: &App, unit_ns: u64, from: usize, until: usize, after: usize) -> Vec<Slice> {
    let events = &app.session.trace().events;
    let rows = app.rows();
    let unit_ns = unit_ns.max(1);
    let mut out = Vec::new();
    let mut row = from;
    if row >= rows {
        return out;
    }
    let first = app.timeline.row_time_ns(events, row);
    let mut t = first - first % unit_ns;
    let mut past_until: Option<usize> = None;
    while row < rows {
        if past_until.is_some_and(|at| out.len() >= at + after) {
            break;
        }
        let end_t = t.saturating_add(unit_ns);
        let lo = row;
        while row < rows && app.timeline.row_time_ns(events, row) < end_t {
            row += 1;
        }
        out.push(Slice::Rows { lo, hi: row });
        if row > until && past_until.is_none() {
            past_until = Some(out.len());
        }
        t = end_t;
        if row >= rows {
            break;
        }
        // Quiet slices: a few drawn, the rest folded into one line.
        let next = app.timeline.row_time_ns(events, row);
        let quiet_ns = next.saturating_sub(t);
        if quiet_ns / unit_ns > QUIET_LINES_MAX as u64 {
            for _ in 0..QUIET_LINES_MAX {
                out.push(Slice::Rows { lo: row, hi: row });
            }
            let folded_ns = quiet_ns - quiet_ns % unit_ns;
            out.push(Slice::Quiet { ns: folded_ns });
            t = t.saturating_add(folded_ns);
        }
    }
    out
}

/// The lines shown: in event order (`zoom` rows a line, aligned with the list at zoom 1)
/// or on the time axis, with the selection's line.
fn slices(app: &App, height: usize) -> (Vec<Slice>, Option<usize>) {
    let rows = app.rows();
    let zoom = app.zoom.max(1);
    let contains = |sl: &[Slice]| {
        sl.iter().position(|x| match *x {
            Slice::Rows { lo, hi } => lo <= app.sel && app.sel < hi,
            Slice::Quiet { .. } => false,
        })
    };
    match app.time_axis_ns {
        None => {
            // With one event per row the diagram scrolls with the list; zoomed out it
            // centres the selection's bucket.
            let top = if zoom == 1 {
                app.list_top
            } else {
                (app.sel / zoom).saturating_sub(height / 2)
            };
            let out: Vec<Slice> = (top..top + height)
                .map(|b| b * zoom)
                .take_while(|&lo| lo < rows)
                .map(|lo| Slice::Rows {
                    lo,
                    hi: (lo + zoom).min(rows),
                })
                .collect();
            let sel = contains(&out);
            (out, sel)
        }
        Some(unit_ns) => {
            // Lines from far enough above the selection to fill the screen, then a window
            // with the selection a third of the way down (lower at the end of the run).
            let all = time_slices(
                app,
                unit_ns,
                app.sel.saturating_sub(height),
                app.sel,
                height,
            );
            let at = contains(&all).unwrap_or(0);
            let start = at
                .saturating_sub(height / 3)
                .min(all.len().saturating_sub(height));
            let window: Vec<Slice> = all.into_iter().skip(start).take(height).collect();
            (window, Some(at - start))
        }
    }
}

pub fn render(app: &App, frame: &mut Frame, area: Rect, lane_w: u16) {
    let zoom = app.zoom.max(1);
    let title = match app.time_axis_ns {
        Some(ns) => format!(
            " {} ↓ {}/line ",
            if app.virtual_time { "time" } else { "wall" },
            super::short_time(ns)
        ),
        None if zoom == 1 => " events ↓ ".to_string(),
        None => format!(" events ↓ ×{zoom} "),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let lane_w = (lane_w as usize).max(2);
    let n = app.lane_count();
    let first = app.lane_offset.min(n.saturating_sub(1));
    let lanes = Lanes {
        first,
        count: (width / lane_w).min(n - first).max(1),
        width: lane_w,
    };
    let shown_w = lanes.count * lane_w;
    // Header: node names, one per lane.
    let mut header = String::new();
    for k in 0..lanes.count {
        let name = lane_name(app, first + k);
        header.push_str(&format!(
            "{:^w$}",
            short_name(&name, lane_w - 1),
            w = lane_w
        ));
    }
    let mut lines = vec![Line::styled(fit(&header, width), style::title())];
    let height = inner.height.saturating_sub(1) as usize;
    let (shown, sel_line) = slices(app, height);
    let mut last_row = 0;
    for (k, slice) in shown.iter().enumerate() {
        let mut cells = vec![(' ', Style::default()); shown_w];
        match *slice {
            Slice::Quiet { ns } => {
                for k in 0..lanes.count {
                    let node = NodeId((first + k) as u32);
                    let up = is_service_lane(app, first + k) || app.timeline.is_up(node, last_row);
                    cells[k * lane_w + lane_w / 2] = (if up { '┆' } else { ' ' }, style::dim());
                }
                let label = format!(" {} ", super::short_time(ns));
                let at = shown_w.saturating_sub(label.chars().count()) / 2;
                for (j, c) in label.chars().enumerate() {
                    if let Some(cell) = cells.get_mut(at + j) {
                        *cell = (c, Style::default().fg(Color::Yellow));
                    }
                }
            }
            Slice::Rows { lo, hi } => {
                // Lifelines: solid while the node is up.
                let at = if hi > lo {
                    hi - 1
                } else {
                    lo.saturating_sub(1)
                };
                last_row = at;
                for k in 0..lanes.count {
                    let node = NodeId((first + k) as u32);
                    if is_service_lane(app, first + k) {
                        cells[k * lane_w + lane_w / 2] = ('┆', style::dim());
                        continue;
                    }
                    let up = app.timeline.is_up(node, at);
                    cells[k * lane_w + lane_w / 2] = if up {
                        ('│', style::dim())
                    } else {
                        ('┊', style::dim())
                    };
                }
                let mut any_lit = app.highlight.is_none() || hi == lo;
                for row in lo..hi {
                    let lit = app.lit(row);
                    any_lit |= lit;
                    mark(app, row, &lanes, &mut cells, hi - lo == 1, lit);
                }
                if !any_lit {
                    for c in cells.iter_mut() {
                        c.1 = style::dim();
                    }
                }
            }
        }
        if Some(k) == sel_line {
            for c in cells.iter_mut() {
                c.1 = c.1.add_modifier(Modifier::REVERSED);
            }
        }
        lines.push(cells_line(&cells));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// A lane's name: a node's, or a service's in brackets.
fn lane_name(app: &App, lane: usize) -> String {
    match app.node_names.get(lane) {
        Some(name) => name.clone(),
        None => {
            let s = lane - app.node_names.len();
            format!("[{}]", app.timeline.services.get(s).map_or("?", |s| s))
        }
    }
}

fn is_service_lane(app: &App, lane: usize) -> bool {
    lane >= app.node_names.len()
}

/// The lane of the service connection `conn` talks to, if its connect is in the trace.
fn service_lane(app: &App, conn: ConnId) -> Option<NodeId> {
    let s = app.timeline.conn_service.get(&conn)?;
    Some(NodeId((app.node_names.len() + s) as u32))
}

/// Draws one event into a row's cells. `arrows`: draw message lines (one event per row).
fn mark(
    app: &App,
    row: usize,
    lanes: &Lanes,
    cells: &mut [(char, Style)],
    arrows: bool,
    lit: bool,
) {
    let events = &app.session.trace().events;
    let e = &events[app.record_of(row)];
    let kind_style = if lit {
        style::kind(e.record.kind())
    } else {
        style::dim()
    };
    let put = |cells: &mut [(char, Style)], col: usize, c: char, s: Style| {
        if col < cells.len() && rank(c) >= rank(cells[col].0) {
            cells[col] = (c, s);
        }
    };
    // A line between two lanes, with an arrowhead at the receiving end.
    let line = |cells: &mut [(char, Style)], from: NodeId, to: NodeId, dash: char, s: Style| {
        let (a, b) = (lanes.clamp_col(from), lanes.clamp_col(to));
        if a == b {
            return;
        }
        let (lo, hi) = (a.min(b), a.max(b));
        for cell in cells.iter_mut().take(hi).skip(lo + 1) {
            *cell = (dash, s);
        }
        if lanes.col(from).is_some() {
            cells[a] = (if a < b { '├' } else { '┤' }, s);
        }
        if lanes.col(to).is_some() {
            let head = if a < b { b - 1 } else { b + 1 };
            if head != a {
                cells[head] = (if a < b { '▶' } else { '◀' }, s);
            }
        }
    };
    let sender_of = |send: u64| events.get(send as usize).and_then(|e| e.node);
    match &e.record {
        Record::Deliver {
            node, from, send, ..
        } => {
            if arrows {
                let s = if lit {
                    Style::default().fg(Color::Blue)
                } else {
                    style::dim()
                };
                line(cells, *from, *node, '─', s);
            }
            let c = if send.is_none() { '?' } else { '●' };
            if let Some(col) = lanes.col(*node) {
                put(cells, col, c, kind_style);
            }
        }
        Record::Drop { send, .. } | Record::Duplicate { send } => {
            let to = match events.get(*send as usize).map(|e| &e.record) {
                Some(Record::Send { to, .. }) => Some(*to),
                _ => None,
            };
            let dropped = matches!(e.record, Record::Drop { .. });
            if let (Some(from), Some(to)) = (sender_of(*send), to) {
                if arrows {
                    line(cells, from, to, '┄', kind_style);
                }
                if let Some(col) = lanes.col(to) {
                    put(cells, col, if dropped { '✗' } else { '+' }, kind_style);
                }
            }
        }
        Record::Timer { node, .. } => {
            if let Some(col) = lanes.col(*node) {
                put(cells, col, '○', kind_style);
            }
        }
        Record::ServiceIn { node, conn, .. } => {
            if let (true, Some(service)) = (arrows, service_lane(app, *conn)) {
                let s = if lit {
                    Style::default().fg(Color::Cyan)
                } else {
                    style::dim()
                };
                line(cells, service, *node, '─', s);
            }
            if let Some(col) = lanes.col(*node) {
                put(cells, col, '●', kind_style);
            }
        }
        Record::External { node, .. } => {
            if let Some(col) = lanes.col(*node) {
                put(cells, col, '◆', kind_style);
            }
        }
        Record::Start { node, .. } | Record::Restart { node, .. } | Record::Resume { node, .. } => {
            let c = match e.record {
                Record::Start { .. } => '▲',
                Record::Restart { .. } => '△',
                _ => '▶',
            };
            if let Some(col) = lanes.col(*node) {
                put(cells, col, c, kind_style);
            }
        }
        Record::Crash { node, .. } => {
            if let Some(col) = lanes.col(*node) {
                put(
                    cells,
                    col,
                    '×',
                    if lit { style::bad() } else { style::dim() },
                );
            }
        }
        Record::Fault(FaultRecord::Cut { links, .. }) => {
            for (a, b) in links {
                for n in [a, b] {
                    if let Some(col) = lanes.col(*n) {
                        put(cells, col, '#', kind_style);
                    }
                }
            }
        }
        Record::Fault(FaultRecord::Heal { .. }) => {
            for k in 0..lanes.count {
                put(
                    cells,
                    k * lanes.width + lanes.width / 2,
                    '=',
                    if lit {
                        Style::default().fg(Color::Green)
                    } else {
                        style::dim()
                    },
                );
            }
        }
        Record::Fault(FaultRecord::ClockJump { node, .. }) => {
            if let Some(col) = lanes.col(*node) {
                put(cells, col, '±', kind_style);
            }
        }
        Record::Violation { .. } => {
            for c in cells.iter_mut() {
                if c.0 == ' ' {
                    *c = ('!', style::bad());
                }
            }
        }
        Record::End { .. } => {
            for c in cells.iter_mut() {
                *c = ('═', style::dim());
            }
        }
        _ => {}
    }
    // What the step wrote to services: dotted lines into their lanes.
    if let (true, Some(node)) = (arrows, e.record.input_node()) {
        let s = if lit {
            Style::default().fg(Color::Cyan)
        } else {
            style::dim()
        };
        let outputs = events[app.record_of(row) + 1..]
            .iter()
            .take_while(|o| o.record.input_node().is_none() && !o.record.ends_step());
        for o in outputs {
            if let Record::ServiceOut { conn, .. } = &o.record {
                if let Some(service) = service_lane(app, *conn) {
                    line(cells, node, service, '┈', s);
                }
            }
        }
    }
}
