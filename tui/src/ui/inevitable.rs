//! The inevitability view (`I`): the curve of how often forked futures break the same
//! invariant against time, its reading, and the moments measured.

use super::{fit, style};
use crate::app::App;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;
use retrace_replayer::inevitable::Shape;
use retrace_sim::format_ns;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let Some(c) = &app.curve else {
        return;
    };
    let block = Block::bordered().title(format!(
        " when did `{}` become inevitable? ({} forks) ",
        c.target.invariant, c.forks
    ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let chart_width = width.saturating_sub(10).clamp(16, 120);
    let mut lines: Vec<Line> = c
        .chart(chart_width, 10)
        .lines()
        .map(|l| Line::raw(fit(l, width)))
        .collect();
    let rel = |ns: u64| format_ns(ns.saturating_sub(c.base_ns));
    let pct = |i: usize| format!("{:.0}%", c.points[i].probability() * 100.0);
    let reading = match (c.shape, c.turn) {
        (Shape::Turn, Some(t)) if c.sharp() => format!(
            "one step made it inevitable: {} of futures before it ({}), {} after",
            pct(t.unlikely),
            rel(c.points[t.unlikely].time_ns),
            pct(t.certain)
        ),
        (Shape::Turn, Some(t)) => format!(
            "from unlikely ({} at {}) to near-certain ({} at {}) over {} steps",
            pct(t.unlikely),
            rel(c.points[t.unlikely].time_ns),
            pct(t.certain),
            rel(c.points[t.certain].time_ns),
            c.points[t.certain].moment - c.points[t.unlikely].moment
        ),
        (Shape::Gradual, _) => "it rises, but never from unlikely to near-certain".into(),
        (Shape::FlatHigh, _) => "flat and high: decided before any event of the trace".into(),
        (Shape::FlatLow, _) => "flat and low: the trace's own future was the unlucky one".into(),
        _ => "flat: no moment stands out".into(),
    };
    lines.push(Line::styled(fit(&reading, width), style::title()));
    if let Some(step) = c.named_step() {
        if let Some(s) = app.session.steps().steps.get(step) {
            let row = app.timeline.row_of(s.input);
            lines.push(Line::raw(fit(
                &format!("Enter: step {step}, {}", app.row_text(row)),
                width,
            )));
        }
    }
    frame.render_widget(Paragraph::new(lines), inner);
}
