//! The what-if panel (`f`): what is pending at the moment — messages in flight, then the
//! nodes — each with the change picked for it, the changes in order, and the seed.

use super::{fit, short_time, style};
use crate::app::App;
use crate::what_if::{describe_changes, Row};
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let Some(w) = &app.what_if else {
        return;
    };
    let m = &w.moment;
    let block = Block::bordered().title(format!(
        " what if, after event {} (+{}) · seed {} ",
        m.at,
        short_time(m.time_ns.saturating_sub(app.timeline.base_ns)),
        w.seed
    ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let mut head = vec![Line::styled(
        fit(
            &format!(
                "{} message{} in flight (n now · d delay · x drop · D duplicate), then the nodes (c crash · r restart · i isolate)",
                m.messages.len(),
                if m.messages.len() == 1 { "" } else { "s" }
            ),
            width,
        ),
        style::title(),
    )];
    if m.unknown_in_flight > 0 {
        head.push(Line::styled(
            fit(
                &format!(
                    "{} more in flight whose content the trace does not hold: lost to a branch",
                    m.unknown_in_flight
                ),
                width,
            ),
            style::dim(),
        ));
    }
    let names = &app.node_names;
    let mut rows: Vec<Line> = Vec::with_capacity(w.rows());
    for i in 0..w.rows() {
        let text = match w.row(i) {
            Some(Row::Message(msg)) => {
                let change = w
                    .change_of_message(msg.send)
                    .map(|c| format!("[{}] ", c.describe(names)))
                    .unwrap_or_default();
                format!(
                    "#{:<7} {} → {}  sent +{}{}  {change}{}",
                    msg.send,
                    app.node_name(msg.from),
                    app.node_name(msg.to),
                    short_time(msg.sent_ns.saturating_sub(app.timeline.base_ns)),
                    if msg.copies > 1 {
                        format!(" ×{}", msg.copies)
                    } else {
                        String::new()
                    },
                    msg.text
                )
            }
            Some(Row::Node(node)) => {
                let changes: Vec<String> =
                    w.changes_of_node(node).map(|c| c.describe(names)).collect();
                format!(
                    "{:<12} {:<5} {}",
                    app.node_name(node),
                    if m.up.get(node.index()) == Some(&true) {
                        "up"
                    } else {
                        "down"
                    },
                    if changes.is_empty() {
                        String::new()
                    } else {
                        format!("[{}]", changes.join(", "))
                    }
                )
            }
            None => String::new(),
        };
        let marked = if i == w.sel { "> " } else { "  " };
        let line = fit(&format!("{marked}{text}"), width);
        rows.push(if i == w.sel {
            Line::styled(line, style::selected())
        } else {
            Line::raw(line)
        });
    }
    let until = if app.breakpoints.is_empty() {
        "runs to the violation or the scenario's end".to_string()
    } else {
        format!(
            "runs to the violation or the scenario's end; opens at the first breakpoint ({})",
            app.breakpoints.len()
        )
    };
    let foot = vec![
        Line::styled(
            fit(
                &format!(
                    "changes: {}",
                    describe_changes(&w.changes, names, "none (a branch with a new seed only)")
                ),
                width,
            ),
            style::title(),
        ),
        Line::styled(fit(&until, width), style::dim()),
    ];
    // The rows scroll to keep the selection in view between the head and the foot.
    let room = (inner.height as usize)
        .saturating_sub(head.len() + foot.len())
        .max(1);
    let top = w.sel.saturating_sub(room.saturating_sub(1));
    let mut lines = head;
    lines.extend(rows.into_iter().skip(top).take(room));
    while lines.len() + foot.len() < inner.height as usize {
        lines.push(Line::raw(""));
    }
    lines.extend(foot);
    frame.render_widget(Paragraph::new(lines), inner);
}
