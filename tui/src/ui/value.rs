//! The value view: the picker (values worth following at the selected event), then the
//! value's story (where it came from, where it went, who never got a copy).

use super::{fit, style};
use crate::app::App;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let Some(v) = &app.value else {
        return;
    };
    let (title, rows, sel): (String, Vec<(String, Style)>, usize) = match &v.answer {
        Some(a) => (
            format!(" value {} across the cluster ", fit(&a.value, 40)),
            a.lines
                .iter()
                .map(|(_, l)| {
                    let s = if l.contains("never arrived")
                        || l.contains("CRASHED")
                        || l.contains("DROPPED")
                    {
                        style::bad()
                    } else if l.ends_with(':') && !l.starts_with(' ') {
                        style::title()
                    } else {
                        Style::default()
                    };
                    (l.clone(), s)
                })
                .collect(),
            a.sel,
        ),
        None => (
            " follow which value? ".to_string(),
            v.picks
                .iter()
                .map(|p| (p.label.clone(), Style::default()))
                .collect(),
            v.pick_sel,
        ),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let height = inner.height as usize;
    // Keep the selection in view, a third of the way down when it has moved past.
    let first = if sel < height {
        0
    } else {
        sel + 1 - height + height / 3
    };
    let lines: Vec<Line> = rows
        .iter()
        .enumerate()
        .skip(first)
        .take(height)
        .map(|(k, (text, s))| {
            let text = fit(text, width);
            if k == sel {
                Line::styled(format!("{text:<width$}"), s.patch(style::selected()))
            } else {
                Line::styled(text, *s)
            }
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}
