//! Rendering: a pure function of the [`App`] (besides remembering the list's scroll
//! position), drawn the same on a real terminal and on ratatui's test backend.

mod branches;
mod detail;
mod diagram;
mod help;
mod inevitable;
mod list;
mod profile;
mod status;
mod value;
mod what_if;

use crate::app::{App, View};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// Below this the screen cannot show the three panes usefully.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

pub fn render(app: &mut App, frame: &mut Frame) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = vec![
            Line::from("terminal too small"),
            Line::from(format!(
                "{}x{} here; retrace needs at least {MIN_WIDTH}x{MIN_HEIGHT}",
                area.width, area.height
            )),
            Line::from("enlarge it, or press q to quit"),
        ];
        let y = area.height.saturating_sub(3) / 2;
        let at = Rect::new(area.x, area.y + y, area.width, area.height.min(3));
        frame.render_widget(Paragraph::new(text).centered(), at);
        return;
    }
    let [body, status_area, message_area, hints_area] = Layout::vertical([
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    match app.view {
        View::Main => {
            // A small terminal gives the detail half the height: the event and the state
            // change are what matter there, more than a longer list.
            let detail_h = if body.height < 30 {
                body.height / 2
            } else {
                (body.height * 2 / 5).max(7)
            };
            let [top, bottom] =
                Layout::vertical([Constraint::Min(0), Constraint::Length(detail_h)]).areas(body);
            let lanes = app.lane_count().max(1) as u16;
            let lane_w = lane_width(app, top.width);
            app.lane_width_shown = lane_w;
            let diagram_w = (lanes * lane_w + 2).min(top.width / 2).max(12);
            let [left, right] =
                Layout::horizontal([Constraint::Length(diagram_w), Constraint::Min(0)]).areas(top);
            list::render(app, frame, right);
            diagram::render(app, frame, left, lane_w);
            detail::render(app, frame, bottom);
        }
        View::Profile => profile::render(app, frame, body),
        View::Inevitable => inevitable::render(app, frame, body),
        View::Help => help::render(app, frame, body),
        View::Value => value::render(app, frame, body),
        View::WhatIf => what_if::render(app, frame, body),
        View::Branches => branches::render(app, frame, body),
    }
    status::render(app, frame, status_area, message_area, hints_area);
}

/// Characters per node lane: the user's choice (`+`/`-`), else what fits in 30% of the width.
fn lane_width(app: &App, width: u16) -> u16 {
    if app.lane_width > 0 {
        return app.lane_width;
    }
    let lanes = app.lane_count().max(1) as u16;
    (width * 3 / 10 / lanes).clamp(3, 8)
}

/// Styles shared by the panes.
pub(crate) mod style {
    use super::*;

    pub fn dim() -> Style {
        Style::default().fg(Color::DarkGray)
    }

    pub fn selected() -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    pub fn bad() -> Style {
        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    pub fn title() -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }

    /// The colour of an event kind in the list and the diagram.
    pub fn kind(kind: &str) -> Style {
        match kind {
            "drop" | "crash" | "violation" => Style::default().fg(Color::Red),
            "external" => Style::default().fg(Color::Cyan),
            "fault" | "duplicate" => Style::default().fg(Color::Magenta),
            "start" | "restart" => Style::default().fg(Color::Green),
            "timer" => Style::default().fg(Color::Yellow),
            _ => Style::default(),
        }
    }
}

/// A time for the screen: microseconds under a millisecond, else milli- or full seconds
/// with enough digits to order events.
pub fn short_time(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.3}ms", ns as f64 / 1e6)
    } else {
        format!("{:.6}s", ns as f64 / 1e9)
    }
}

/// A node name that fits `width`: whole if it can, else its first letter and its number
/// (`replica-12` -> `r12`), else cut.
pub(crate) fn short_name(name: &str, width: usize) -> String {
    if name.chars().count() <= width {
        return name.to_string();
    }
    let digits: String = name
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let first = name.chars().next().map(String::from).unwrap_or_default();
    let short = format!("{first}{digits}");
    if short.chars().count() <= width {
        short
    } else {
        fit(name, width)
    }
}

/// Text cut to `width` characters (with an ellipsis when cut).
pub(crate) fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// A line from per-cell characters and styles, runs of one style joined into one span.
pub(crate) fn cells_line(cells: &[(char, Style)]) -> Line<'static> {
    let mut spans = Vec::new();
    let mut run = String::new();
    let mut run_style = None;
    for &(c, s) in cells {
        if run_style != Some(s) && !run.is_empty() {
            spans.push(Span::styled(
                std::mem::take(&mut run),
                run_style.unwrap_or_default(),
            ));
        }
        run_style = Some(s);
        run.push(c);
    }
    if !run.is_empty() {
        spans.push(Span::styled(run, run_style.unwrap_or_default()));
    }
    Line::from(spans)
}
