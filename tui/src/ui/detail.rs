//! The selected event's detail: what happened (with the message pretty-printed and the
//! step's outputs), the node's state before and after with a structural diff, and what was
//! pending in the whole cluster at that moment.

use super::{fit, style};
use crate::app::App;
use crate::timeline::Pending;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;
use retrace_replayer::event_detail;
use retrace_sim::trace::{Event, Record};

/// Pending messages and timers listed at most.
const PENDING_SHOWN: usize = 12;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let two_columns = area.width >= 100;
    let (left, right) = if two_columns {
        let [l, r] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
            .areas(area);
        (l, Some(r))
    } else {
        (area, None)
    };
    let mut event = event_lines(app, left.width.saturating_sub(2) as usize);
    let mut state = state_lines(app);
    if right.is_none() {
        // One column: the state change goes right under the event's heading (its kind,
        // node and time, and any invariant it broke), ahead of a message that may be long.
        let heading = event.len().min(
            1 + app
                .own_step(app.sel)
                .map_or(0, |s| app.session.violations_at(s).len()),
        );
        let rest = event.split_off(heading);
        let changes = state.len().min(1 + app.detail.states.changes.len());
        let after_changes = state.split_off(changes);
        event.append(&mut state);
        event.extend(rest);
        event.push(Line::default());
        event.extend(after_changes);
    }
    let index = app.record_of(app.sel);
    let block = Block::bordered().title(format!(" event {index} "));
    frame.render_widget(
        Paragraph::new(event)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((app.detail_scroll, 0)),
        left,
    );
    if let Some(r) = right {
        let title = match app.detail.step {
            Some(s) => format!(
                " state of {} ",
                app.node_name(app.session.steps().steps[s].node)
            ),
            None => " state ".to_string(),
        };
        frame.render_widget(
            Paragraph::new(state)
                .block(Block::bordered().title(title))
                .wrap(Wrap { trim: false })
                .scroll((app.detail_scroll, 0)),
            r,
        );
    }
}

fn event_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let trace = app.session.trace();
    let i = app.record_of(app.sel);
    let e = &trace.events[i];
    let describe = crate::session::Described(&*app.session);
    let mut lines = vec![Line::styled(
        fit(
            &format!(
                "{} {} at +{}{}",
                e.record.kind(),
                e.node.map(|n| app.node_name(n)).unwrap_or_default(),
                super::short_time(e.time_ns.saturating_sub(app.timeline.base_ns)),
                if app.virtual_time { "" } else { " (wall)" }
            ),
            width,
        ),
        style::title(),
    )];
    // What broke comes first, in full (wrapped): it is why the user is here.
    if let Some(s) = app.own_step(app.sel) {
        for v in app.session.violations_at(s) {
            lines.push(Line::styled(
                format!(
                    "invariant `{}` broken after this step: {}",
                    v.invariant, v.message
                ),
                style::bad(),
            ));
        }
    }
    let payload = match &e.record {
        Record::Deliver { payload, .. } | Record::External { payload, .. } => Some(payload),
        _ => None,
    };
    match payload {
        Some(p) => {
            let head = event_detail(&trace.header, e, &|_: &[u8]| String::new());
            lines.push(Line::from(head.trim_end().to_string()));
            lines.push(Line::styled("message:", style::title()));
            for l in app.session.describe_pretty(p).lines() {
                lines.push(Line::from(format!("  {l}")));
            }
        }
        None => lines.push(Line::from(event_detail(&trace.header, e, &describe))),
    }
    // The step's own records: what the handler did.
    if let Some(s) = app.own_step(app.sel) {
        let st = &app.session.steps().steps[s];
        if st.end > st.input + 1 {
            lines.push(Line::styled("the step did:", style::title()));
            for out in &trace.events[st.input + 1..st.end] {
                lines.push(Line::from(format!(
                    "  {:<12} {}",
                    out.record.kind(),
                    event_detail(&trace.header, out, &describe)
                )));
            }
        }
    }
    // A request or answer that crossed the cluster's edge over HTTP, as it was on the wire.
    if let Some(s) = app.own_step(app.sel) {
        let st = &app.session.steps().steps[s];
        for out in &trace.events[st.input + 1..st.end] {
            http_lines(&out.record, &mut lines);
        }
    }
    if let Some(d) = app.session.divergence() {
        if app.step_of_row(app.sel) == Some(d.step) {
            for l in d.to_string().lines() {
                lines.push(Line::styled(l.to_string(), style::bad()));
            }
        }
    }
    lines
}

fn state_lines(app: &App) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let states = &app.detail.states;
    if app.detail.step.is_some() {
        if states.changes.is_empty() {
            lines.push(Line::styled("no change to the node's state", style::dim()));
        } else {
            lines.push(Line::styled(
                format!("changed ({}):", states.changes.len()),
                style::title(),
            ));
            for c in &states.changes {
                lines.push(Line::styled(
                    format!("  {c}"),
                    Style::default().fg(Color::Yellow),
                ));
            }
        }
        // Pending work first: it is short, and the states can be long (`{`/`}` scroll).
        lines.extend(pending_lines(app));
        for (title, state) in [("after:", &states.after), ("before:", &states.before)] {
            lines.push(Line::styled(title, style::title()));
            match state {
                Some(s) => lines.extend(s.lines().map(|l| Line::from(format!("  {l}")))),
                None => lines.push(Line::styled("  (down)", style::dim())),
            }
        }
        return lines;
    }
    lines.extend(pending_lines(app));
    lines
}

fn pending_lines(app: &App) -> Vec<Line<'static>> {
    let trace = app.session.trace();
    let i = app.record_of(app.sel);
    let now = trace.events[i].time_ns;
    let (pending, total) = app.timeline.pending_at(i, PENDING_SHOWN);
    let mut lines = vec![Line::styled(
        format!("pending in the cluster: {total}"),
        style::title(),
    )];
    for p in pending {
        let text = match p {
            Pending::Message { send } => {
                let from = trace.events[send]
                    .node
                    .map(|n| app.node_name(n))
                    .unwrap_or_default();
                let to = match &trace.events[send].record {
                    Record::Send { to, .. } => app.node_name(*to),
                    _ => String::new(),
                };
                format!(
                    "  msg   #{send} {from} → {to}, sent {} ago",
                    super::short_time(now.saturating_sub(trace.events[send].time_ns))
                )
            }
            Pending::Timer { set, timer, end } => {
                let on = trace.events[set]
                    .node
                    .map(|n| app.node_name(n))
                    .unwrap_or_default();
                match &trace.events[set].record {
                    Record::TimerSet { tag, after_ns, .. } => {
                        let due = trace.events[set].time_ns + after_ns;
                        format!(
                            "  timer t{} {} on {on}, due in {}",
                            timer.0,
                            app.session.describe_timer(tag.as_bytes()),
                            super::short_time(due.saturating_sub(now))
                        )
                    }
                    // Pending when the node resumed from a snapshot, which keeps only the
                    // timer's id: its value and due time are known where it fires.
                    _ => match trace.events.get(end) {
                        Some(
                            fired @ Event {
                                record: Record::Timer { tag, .. },
                                ..
                            },
                        ) => format!(
                            "  timer t{} {} on {on}, set before its resume, due in {}",
                            timer.0,
                            app.session.describe_timer(tag.as_bytes()),
                            super::short_time(fired.time_ns.saturating_sub(now))
                        ),
                        _ => format!(
                            "  timer t{} on {on}, set before its resume (it never fires here)",
                            timer.0
                        ),
                    },
                }
            }
        };
        lines.push(Line::from(text));
    }
    if total > PENDING_SHOWN {
        lines.push(Line::styled(
            format!("  … and {} more", total - PENDING_SHOWN),
            style::dim(),
        ));
    }
    lines
}

/// An HTTP record in full: request or status line, every header, the body.
fn http_lines(record: &Record, lines: &mut Vec<Line<'static>>) {
    let (title, first, headers, body) = match record {
        Record::HttpRequest { request, http } => (
            format!("arrived over HTTP ({request}):"),
            format!("{} {}", http.method, http.target),
            &http.headers,
            &http.body,
        ),
        Record::HttpResponse { request, http } => (
            format!("answered over HTTP ({request}):"),
            format!("{} {}", http.status, retrace_sim::http::reason(http.status)),
            &http.headers,
            &http.body,
        ),
        _ => return,
    };
    lines.push(Line::styled(title, style::title()));
    lines.push(Line::from(format!("  {first}")));
    for (name, value) in headers {
        lines.push(Line::from(format!("  {name}: {value}")));
    }
    if !body.is_empty() {
        lines.push(Line::from(format!(
            "  body: {}",
            retrace_sim::http::show_bytes(body, 512)
        )));
    }
}
