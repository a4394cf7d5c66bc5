//! A trace opened a window at a time, as a trace too large to load opens: `(` and `)` page
//! through it, `:window N` jumps, and every event of the trace is on some page.

mod common;

use common::{keys, screen, STALE_READ};
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use retrace_models::kv::KvModel;
use retrace_replayer::index::{IndexFile, IndexedTrace};
use retrace_sim::trace::Record;
use retrace_sim::{scenario, Simulation, TraceSink};
use retrace_tui::{App, WindowPager};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Records per window: a few hundred, so the trace has many pages.
const RECORDS: u64 = 200;

fn trace_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("retrace-tui-pager-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let s = scenario::parse::<KvModel>("stale-read.toml", STALE_READ).unwrap();
    let file = std::fs::File::create(&path).unwrap();
    Simulation::<KvModel>::new(&s, s.seed, TraceSink::Stream(Box::new(file))).run();
    path
}

fn open(path: &Path, around: u64) -> App {
    let indexed = IndexedTrace::open(path, IndexFile::Memory).unwrap();
    let (page, pager) =
        WindowPager::<KvModel>::first(path, indexed, around, RECORDS, &mut |_, _| {}).unwrap();
    App::in_window(page, Box::new(pager))
}

/// Whether the selected row is the one the trace's event `i` shows in (a row per event
/// the list shows; a send shows in the row of the step that made it).
fn selects(app: &App, i: u64) -> bool {
    let pager = app.pager.as_ref().expect("a window");
    let k = (0..app.session.trace().events.len()).find(|&k| pager.original(k) == Some(i));
    k.is_some_and(|k| app.timeline.row_of(k) == app.sel)
}

/// The trace's numbers of every event the window holds.
fn originals(app: &App) -> Vec<u64> {
    let pager = app.pager.as_ref().expect("a window");
    (0..app.session.trace().events.len())
        .filter_map(|k| pager.original(k))
        .collect()
}

#[test]
fn paging_back_from_the_end_shows_every_event_of_the_trace_and_stops_at_its_start() {
    let path = trace_file("back.trace");
    let whole = retrace_sim::Trace::from_bytes(&std::fs::read(&path).unwrap(), "back").unwrap();
    let len = whole.events.len() as u64;
    assert!(len > 10 * RECORDS, "the trace is many windows long: {len}");
    let mut app = open(&path, len - 1);
    assert!(app.pager.is_some());
    assert!(selects(&app, len - 1), "it opens at the event asked for");
    keys(&mut app, ")");
    assert_eq!(
        app.message.as_deref(),
        Some("this window ends at the trace's end")
    );
    let mut seen: BTreeSet<u64> = originals(&app).into_iter().collect();
    let mut pages = 1;
    loop {
        let first = *originals(&app).first().unwrap();
        keys(&mut app, "(");
        if app.message.as_deref() == Some("this window starts at the trace's start") {
            assert_eq!(first, 0);
            break;
        }
        pages += 1;
        assert!(pages as u64 <= len / (RECORDS / 2), "paging back must end");
        // The user stays at the edge they paged over, seen from the new window.
        assert!(selects(&app, first), "{:?}", app.message);
        let here = originals(&app);
        assert!(*here.last().unwrap() >= first, "pages overlap");
        assert!(*here.first().unwrap() < first, "and go back");
        seen.extend(here);
    }
    // Every record is on some page but the ones a window leaves out because they speak
    // of the time before it (a drop or duplicate of an earlier send is on its send's page,
    // except when that page ends before it).
    for e in &whole.events {
        if !matches!(e.record, Record::Drop { .. } | Record::Duplicate { .. }) {
            assert!(seen.contains(&e.index), "event {} is on no page", e.index);
        }
    }
    // And forward again from the start.
    keys(&mut app, ")");
    assert!(originals(&app).first().unwrap() > &0);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn window_command_jumps_in_the_traces_numbering_and_breakpoints_stay() {
    let path = trace_file("jump.trace");
    let mut app = open(&path, 0);
    keys(&mut app, ":break node replica-1<Enter>");
    assert_eq!(app.breakpoints.len(), 1);
    let target = 3 * RECORDS + 17;
    keys(&mut app, &format!(":window {target}<Enter>"));
    assert!(selects(&app, target), "{:?}", app.message);
    assert_eq!(app.breakpoints.len(), 1, "breakpoints outlive the page");
    // The status line says where in the trace the event is.
    let text = screen(&mut app, 160, 50);
    assert!(text.contains(&format!("(trace {target}/")), "{text}");
    keys(&mut app, ":window 99999999<Enter>");
    assert!(
        app.message
            .as_deref()
            .unwrap_or("")
            .starts_with("no event 99999999"),
        "{:?}",
        app.message
    );
    // Paging takes long enough to say so first (the terminal draws this before the key).
    let paren = KeyEvent::from(KeyCode::Char(')'));
    assert!(app
        .slow_key(&paren)
        .is_some_and(|m| m.starts_with("opening the window after")));
    assert_eq!(app.slow_key(&KeyEvent::from(KeyCode::Char('j'))), None);
    keys(&mut app, ":window 5");
    assert!(app.slow_key(&KeyEvent::from(KeyCode::Enter)).is_some());
    keys(&mut app, "<Esc>");
    // Moving past a window's edge says how to go on.
    keys(&mut app, "G");
    keys(&mut app, "j");
    assert_eq!(
        app.message.as_deref(),
        Some("the end of this window: `)` opens the next one")
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn a_whole_trace_has_no_windows_to_page() {
    let mut app = common::app(common::LOST_WRITE);
    assert_eq!(app.slow_key(&KeyEvent::from(KeyCode::Char(')'))), None);
    keys(&mut app, ")");
    assert!(app
        .message
        .as_deref()
        .unwrap_or("")
        .starts_with("the whole trace is open"));
}

#[test]
fn a_resumed_nodes_pending_timers_show_with_their_value_and_due_time() {
    let path = trace_file("timers.trace");
    let mut app = open(&path, 1500);
    // The window starts with its nodes' resumes; after the last of them, every timer the
    // snapshots held is pending.
    let events = &app.session.trace().events;
    let last_resume = events
        .iter()
        .rposition(|e| matches!(e.record, Record::Resume { .. }))
        .expect("a window in the middle resumes its nodes");
    let row = app.timeline.row_of(last_resume);
    app.select(row);
    let text = screen(&mut app, 160, 60);
    assert!(
        text.contains("set before its resume, due in"),
        "a resumed timer shows its value and when it fires:\n{text}"
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
