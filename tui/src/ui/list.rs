//! The event list: one dense line per event, synced with the diagram.

use super::{fit, style};
use crate::app::App;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

/// Rows kept visible above and below the selection when scrolling.
const SCROLL_OFF: usize = 3;

/// The first row to show so that `sel` is in view, moving `top` as little as possible.
pub(crate) fn scroll(top: usize, sel: usize, height: usize, rows: usize) -> usize {
    if height == 0 {
        return sel;
    }
    let off = SCROLL_OFF.min(height.saturating_sub(1) / 2);
    let mut top = top;
    if sel < top + off {
        top = sel.saturating_sub(off);
    }
    if sel + off >= top + height {
        top = (sel + off + 1).saturating_sub(height);
    }
    top.min(rows.saturating_sub(height)).min(sel)
}

pub fn render(app: &mut App, frame: &mut Frame, area: Rect) {
    let title = format!(
        " events {}/{} ",
        app.record_of(app.sel),
        app.session.trace().events.len()
    );
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let height = inner.height.saturating_sub(1) as usize;
    app.list_top = scroll(app.list_top, app.sel, height, app.rows());
    let width = inner.width as usize;
    let mut lines = vec![Line::styled(
        fit(
            &format!(
                "  {:>7} {:>10} {:<10} {:<9} what",
                "event", "time", "node", "kind"
            ),
            width,
        ),
        style::title(),
    )];
    for row in app.list_top..(app.list_top + height).min(app.rows()) {
        let kind = app.session.trace().events[app.record_of(row)].record.kind();
        let mut s = style::kind(kind);
        // The gutter says without colour what the colours say: selected, highlighted.
        let mut gutter = if row == app.sel { '▸' } else { ' ' };
        if app.highlight.is_some() {
            if app.lit(row) {
                if row != app.sel {
                    gutter = if app.own_step(row).is_some() {
                        '•'
                    } else {
                        '!'
                    };
                }
            } else {
                s = style::dim();
            }
        }
        // Where a fork's simulated future starts.
        if gutter == ' ' && app.pager.is_none() && app.branch_at == Some(app.record_of(row)) {
            gutter = '»';
        }
        let text = fit(&format!("{gutter} {}", app.row_text(row)), width);
        if row == app.sel {
            s = s.patch(style::selected());
        }
        lines.push(Line::styled(format!("{text:<width$}"), s));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}
