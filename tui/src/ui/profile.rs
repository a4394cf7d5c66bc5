//! The profile view: a request's critical path as one bar split by hop, coloured by kind
//! (service, queueing, network, timer, waiting on a black box), the time per place, and the hops in order.

use super::{fit, style};
use crate::app::App;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;
use retrace_replayer::profile::Kind;
use retrace_sim::format_ns;

fn kind_color(kind: Kind) -> Color {
    match kind {
        Kind::Service => Color::Green,
        Kind::Queueing => Color::Yellow,
        Kind::Network => Color::Blue,
        Kind::Timer => Color::Magenta,
        Kind::Waiting => Color::Red,
        Kind::Remote => Color::Cyan,
    }
}

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let Some(p) = &app.profile else {
        return;
    };
    let block = Block::bordered().title(format!(" profile of request r{} ", p.request));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let total = p.latency_ns.max(1);
    let mut lines = vec![Line::styled(
        fit(
            &format!(
                "latency {} (from +{} to +{}), critical path of {} hops",
                format_ns(p.latency_ns),
                super::short_time(p.start_ns.saturating_sub(app.timeline.base_ns)),
                super::short_time(p.end_ns.saturating_sub(app.timeline.base_ns)),
                p.path.len()
            ),
            width,
        ),
        style::title(),
    )];
    // The bar: each hop gets its share of the width (at least one cell if it took time).
    let mut bar = Vec::new();
    let mut used = 0usize;
    for (k, h) in p.path.iter().enumerate() {
        let mut w = (h.ns as u128 * width as u128 / total as u128) as usize;
        if w == 0 && h.ns > 0 {
            w = 1;
        }
        if k + 1 == p.path.len() {
            w = width.saturating_sub(used).min(w.max(1));
        }
        let w = w.min(width.saturating_sub(used));
        used += w;
        let c = if k == app.profile_sel { '▓' } else { '█' };
        bar.push(Span::styled(
            c.to_string().repeat(w),
            Style::default().fg(kind_color(h.place.kind)),
        ));
    }
    lines.push(Line::from(bar));
    let mut legend = vec![
        Span::styled(
            "█ service  ",
            Style::default().fg(kind_color(Kind::Service)),
        ),
        Span::styled(
            "█ queueing  ",
            Style::default().fg(kind_color(Kind::Queueing)),
        ),
        Span::styled(
            "█ network  ",
            Style::default().fg(kind_color(Kind::Network)),
        ),
        Span::styled("█ timer", Style::default().fg(kind_color(Kind::Timer))),
    ];
    // Only answers given with `respond_to` after a decision wait this way.
    if p.path.iter().any(|h| h.place.kind == Kind::Waiting) {
        legend.push(Span::styled(
            "  █ waiting",
            Style::default().fg(kind_color(Kind::Waiting)),
        ));
    }
    lines.push(Line::from(legend));
    lines.push(Line::default());
    lines.push(Line::styled(
        "time per place on the critical path:",
        style::title(),
    ));
    let mut places: Vec<_> = p.by_place().into_iter().collect();
    places.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (place, ns) in places.iter().take(8) {
        lines.push(Line::from(vec![
            Span::styled("█ ", Style::default().fg(kind_color(place.kind))),
            Span::raw(fit(
                &format!(
                    "{:<34} {:>10} {:>5.1}%",
                    place.to_string(),
                    format_ns(*ns),
                    *ns as f64 * 100.0 / total as f64
                ),
                width.saturating_sub(2),
            )),
        ]));
    }
    lines.push(Line::default());
    lines.push(Line::styled(
        fit(
            &format!("{:>3} {:<34} {:>10} {:>8}", "hop", "where", "time", "event"),
            width,
        ),
        style::title(),
    ));
    let room = (inner.height as usize).saturating_sub(lines.len());
    let first = app.profile_sel.saturating_sub(room.saturating_sub(1));
    for (k, h) in p.path.iter().enumerate().skip(first).take(room) {
        let text = fit(
            &format!(
                "{:>3} {:<34} {:>10} {:>8}",
                k + 1,
                h.place.to_string(),
                format_ns(h.ns),
                h.event
            ),
            width,
        );
        let s = if k == app.profile_sel {
            style::selected()
        } else {
            Style::default()
        };
        lines.push(Line::styled(text, s));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}
