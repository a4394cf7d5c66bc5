//! The consumers that need a model: a trace re-executed by the replayer (as kv, whatever
//! its header says: a trace of another model must diverge, not panic), opened in the TUI,
//! moved through with keys and drawn.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use retrace_models::KvModel;
use retrace_replayer::Replay;
use retrace_sim::Trace;
use retrace_tui::{ui, App, ModelSession};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(trace) = Trace::from_bytes(data, "fuzz") else {
        return;
    };
    if trace.events.is_empty() {
        return; // `retrace replay` refuses it before the TUI opens
    }
    let Ok(replay) = Replay::<KvModel>::new(trace) else {
        return;
    };
    let session = ModelSession::new(replay);
    let mut app = App::with_scan_budget(Box::new(session), Duration::from_secs(2));
    // TestBackend cannot fail (its error type is Infallible).
    let Ok(mut terminal) = Terminal::new(TestBackend::new(120, 40));
    for keys in ["j", "5j", "k", "l", "h", "G", "g", "w", "]", "e", "r", "p", "c", "C"] {
        app.press(keys);
        let _ = terminal.draw(|f| ui::render(&mut app, f));
    }
});
