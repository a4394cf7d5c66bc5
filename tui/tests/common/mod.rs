//! A small fixed trace, the app over it, keys, and the screen as text.
#![allow(dead_code)]

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use retrace_models::kv::KvModel;
use retrace_replayer::Replay;
use retrace_sim::{scenario, Simulation, Trace, TraceSink};
use retrace_tui::{ui, App, ModelSession};
use std::time::Duration;

/// kv with the ack-before-replicate bug, one client, the primary killed mid-run: small
/// enough to read on one screen, and it loses an acknowledged write.
pub const LOST_WRITE: &str = r#"
model = "kv"
seed = 3
time_limit = "400ms"

[model_options]
replicas = 3
clients = 1
keys = 2
bug = "ack-before-replicate"

[network]
latency = "1ms..3ms"

[workload]
rate = "100/s"
start = "10ms"

[[faults]]
at = "150ms"
crash = "replica-0"
"#;

/// kv whose deposed primary answers reads from its own store (the `local-reads` bug), with
/// the linearizability check on: the violation names the operations of its witness.
pub const STALE_READ: &str = r#"
model = "kv"
seed = 3
time_limit = "2s"

[model_options]
replicas = 3
clients = 4
keys = 4
bug = "local-reads"
linearizable = true

[network]
latency = "1ms..5ms"

[workload]
rate = "100/s"
start = "50ms"

[[faults]]
at = "1s"
partition = [["replica-0", "client-0", "client-1", "client-2", "client-3"], ["replica-1", "replica-2"]]
heal_after = "1s"
"#;

pub fn trace(source: &str) -> Trace {
    let s = scenario::parse::<KvModel>("lost-write.toml", source).expect("scenario");
    let seed = s.seed;
    let report = Simulation::<KvModel>::new(&s, seed, TraceSink::Memory).run();
    Trace::from_bytes(&report.trace.expect("trace"), "lost-write").expect("trace decodes")
}

pub fn app(source: &str) -> App {
    let replay = Replay::<KvModel>::new(trace(source)).expect("replay");
    App::with_scan_budget(Box::new(ModelSession::new(replay)), Duration::from_secs(30))
}

/// Presses keys written as text (see [`App::press`]).
pub fn keys(app: &mut App, text: &str) {
    app.press(text);
}

/// The screen as text, one line per row, trailing spaces trimmed.
pub fn screen(app: &mut App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("backend");
    terminal.draw(|f| ui::render(app, f)).expect("draw");
    let buffer = terminal.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..height {
        let mut line = String::new();
        for x in 0..width {
            line.push_str(buffer[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
