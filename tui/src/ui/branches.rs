//! The tree of what-if branches (`b`): the original run, each branch under the run it
//! branched from, with its changes and what became of it.

use super::{fit, style};
use crate::app::App;
use crate::what_if::describe_changes;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let tree = &app.branches;
    let block = Block::bordered().title(format!(" branches ({}) ", tree.list.len()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let mut lines = Vec::new();
    for (line_no, k) in tree.order().into_iter().enumerate() {
        let b = &tree.list[k];
        let shown = if k == tree.current { "●" } else { " " };
        let what = match b.parent {
            None => format!(
                "the original run{}",
                b.file
                    .as_ref()
                    .map_or_else(String::new, |f| format!(" ({})", f.display()))
            ),
            Some(_) => match &b.made {
                Some(m) => format!(
                    "{k}: after event {}: {} · seed {}",
                    m.at(),
                    describe_changes(m.changes(), &app.node_names, "a new seed"),
                    m.seed()
                ),
                None => format!("{k}"),
            },
        };
        let text = format!(
            "{shown} {}{what}{}{}",
            "  ".repeat(tree.depth(k)),
            if b.outcome.is_empty() {
                String::new()
            } else {
                format!(" — {}", b.outcome)
            },
            b.file
                .as_ref()
                .filter(|_| b.parent.is_some())
                .map_or_else(String::new, |f| format!(" · saved {}", f.display()))
        );
        let text = fit(&text, width);
        lines.push(if line_no == tree.sel {
            Line::styled(text, style::selected())
        } else {
            Line::raw(text)
        });
    }
    let room = inner.height as usize;
    let top = tree.sel.saturating_sub(room.saturating_sub(1));
    let lines: Vec<Line> = lines.into_iter().skip(top).collect();
    frame.render_widget(Paragraph::new(lines), inner);
}
