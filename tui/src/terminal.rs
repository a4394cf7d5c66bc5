//! The event loop on a real terminal: raw mode and the alternate screen, restored on exit
//! and on panic (ratatui's `init` installs the panic hook).

use crate::app::App;
use crate::ui;
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use std::io;

/// Runs the app until the user quits.
pub fn run(app: &mut App) -> io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = (|| -> io::Result<()> {
        while !app.quit {
            terminal.draw(|frame| ui::render(app, frame))?;
            match event::read()? {
                Event::Key(key) if key.kind != KeyEventKind::Release => {
                    // A key that takes a while says so first, on a frame of its own.
                    if let Some(note) = app.slow_key(&key) {
                        app.message = Some(note);
                        terminal.draw(|frame| ui::render(app, frame))?;
                    }
                    app.key(key)
                }
                // A resize redraws on the next turn of the loop.
                _ => {}
            }
        }
        Ok(())
    })();
    ratatui::restore();
    result
}
