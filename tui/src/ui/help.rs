//! The help view: every key and command.

use super::style;
use crate::app::App;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

const KEYS: &[(&str, &str)] = &[
    (
        "j k  ↓ ↑",
        "next / previous event (a number first repeats: 20j)",
    ),
    ("l h  → ←", "next / previous event on the same node"),
    (
        "g G ( )",
        "start / end (NG: event N); a window of a larger trace: the one before / after",
    ),
    ("c C", "continue / reverse-continue to the next breakpoint"),
    (
        "w W",
        "what led here: its request's (or followed value's) steps / all; faults `!`",
    ),
    ("e E", "what the event caused: its request's steps / all"),
    (
        "v",
        "follow a value: where it came from and went, across nodes, and who never got a copy",
    ),
    ("r", "follow the event's request across every node"),
    ("] [", "next / previous highlighted event"),
    (
        "p I",
        "profile the event's request · when its failure became inevitable (forks)",
    ),
    ("/ n N", "search the event list; next / previous match"),
    ("z Z", "zoom the diagram out / in (events or time per row)"),
    (
        "t",
        "diagram axis: event order / time (quiet stretches folded)",
    ),
    ("+ - < >", "wider / narrower lanes; scroll lanes"),
    ("{ } Esc", "scroll the detail; clear the highlight"),
    (
        "f b o",
        "what if: change what is pending here, run a branch · the branch tree · the original",
    ),
    (": q", "command line; quit"),
];

const COMMANDS: &[(&str, &str)] = &[
    (
        "goto N | goto 12.5ms | goto NAME",
        "an event, a time from the start, a bookmark",
    ),
    (
        "break PREDICATE",
        "add a breakpoint; `break` lists them, `delete [N]` removes",
    ),
    (
        "why | effects | clear",
        "highlight causes, effects, nothing",
    ),
    (
        "request ID | profile [ID]",
        "highlight one request's events; its critical path",
    ),
    (
        "value VALUE",
        "follow a value (JSON or a bare string) across the run",
    ),
    (
        "bookmark NAME | window N",
        "name the current event; the window around trace event N",
    ),
    (
        "save PATH",
        "the branch shown as a trace, with the schedule that makes it",
    ),
];

const PREDICATES: &str = "node NAME · kind KIND · msg VARIANT · contains TEXT · state NAME TEXT · invariant · request ID";

pub fn render(_app: &App, frame: &mut Frame, area: Rect) {
    let mut lines = vec![Line::styled("keys", style::title())];
    for (k, what) in KEYS {
        lines.push(Line::from(format!("  {k:<10} {what}")));
    }
    lines.push(Line::default());
    lines.push(Line::styled("commands (after :)", style::title()));
    for (c, what) in COMMANDS {
        lines.push(Line::from(format!("  {c:<34} {what}")));
    }
    lines.push(Line::default());
    lines.push(Line::styled("breakpoint predicates", style::title()));
    lines.push(Line::from(format!("  {PREDICATES}")));
    lines.push(Line::from(
        "  `state` and `invariant` are watches: they stop where they become true, not at every event after",
    ));
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" help ")),
        area,
    );
}
