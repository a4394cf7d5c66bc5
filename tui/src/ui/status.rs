//! The status line (where the cursor is, filters, problems), the message line and the
//! key hints (or the command/search prompt).

use super::{fit, style};
use crate::app::{App, Input, View};
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn render(app: &App, frame: &mut Frame, status: Rect, message: Rect, hints: Rect) {
    let trace = app.session.trace();
    let index = app.record_of(app.sel);
    let e = &trace.events[index];
    let mut parts = vec![match &app.pager {
        // A window numbers its records from 0: say which of the trace's this is too.
        Some(pager) => match pager.original(index) {
            Some(i) => format!(
                "event {index}/{} (trace {i}/{})",
                trace.events.len(),
                pager.trace_len()
            ),
            None => format!("event {index}/{} (the window's own)", trace.events.len()),
        },
        None => format!("event {index}/{}", trace.events.len()),
    }];
    parts.extend([
        format!(
            "step {}/{}",
            app.step_of_row(app.sel).map_or(0, |s| s + 1),
            app.session.steps().len()
        ),
        format!(
            "+{} {}",
            super::short_time(e.time_ns.saturating_sub(app.timeline.base_ns)),
            if app.virtual_time { "virtual" } else { "wall" }
        ),
    ]);
    if let Some(n) = e.node {
        parts.push(app.node_name(n));
    }
    if let (Some(at), None) = (app.branch_at, &app.pager) {
        parts.push(if index < at {
            format!("before the fork at event {at}")
        } else {
            format!("the fork's future (from event {at})")
        });
    }
    if app.branches.current > 0 {
        parts.push(format!("branch {}", app.branches.current));
    }
    if !app.breakpoints.is_empty() {
        let n = app.breakpoints.len();
        parts.push(format!("{n} breakpoint{}", if n == 1 { "" } else { "s" }));
    }
    if let Some(h) = &app.highlight {
        parts.push(format!("{} ({} events)", h.label, h.steps.len()));
    }
    let mut spans = vec![Span::styled(parts.join(" · "), style::title())];
    if let Some(d) = app.session.divergence() {
        spans.push(Span::styled(
            format!(" · ✗ diverged at event {}", d.record_index),
            style::bad(),
        ));
    } else if let Some(v) = app.session.first_violation() {
        spans.push(Span::styled(
            format!(" · ✗ invariant broken at event {}", v.input_index),
            style::bad(),
        ));
    } else if let Some((at, _)) = &app.timeline.recorded_violation {
        spans.push(Span::styled(
            format!(" · ✗ invariant broken at event {at}"),
            style::bad(),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), status);
    if let Some(m) = &app.message {
        frame.render_widget(
            Paragraph::new(Line::styled(
                fit(m, message.width as usize),
                Style::default().fg(Color::Yellow),
            )),
            message,
        );
    }
    let line = match &app.input {
        Input::Command(text) => Line::from(format!(":{text}█")),
        Input::Search(text) => Line::from(format!("/{text}█")),
        Input::Normal => Line::styled(fit(hint(app.view), hints.width as usize), style::dim()),
    };
    frame.render_widget(Paragraph::new(line), hints);
}

fn hint(view: View) -> &'static str {
    match view {
        View::Main => "j/k event  h/l node  g/G ends  c/C break  w why  v value  r request  p profile  f what-if  / search  : cmd  ? help  q quit",
        View::Value => "j/k move  Enter follow / go to the event  b back to the values  Esc back  ? help",
        View::Profile => "j/k hop  Enter go to the hop's event  Esc back  ? help",
        View::Inevitable => "Enter go to the step it names  Esc back  ? help",
        View::WhatIf => "j/k move  n now  d delay  x drop  D duplicate  c crash  r restart  i isolate  u undo  s seed  Enter run  Esc back",
        View::Branches => "j/k move  Enter show the run  o the original  Esc back  ? help",
        View::Help => "Esc, q or ? back",
    }
}
