//! What-if in the TUI, driven by keys over a real trace file: change what is pending at an
//! event, run the branch, go through the tree, save a branch, and make the saved branch
//! again with `retrace fork --schedule`, byte for byte.

mod common;

use common::{record_and_merge_kv, retrace, scratch_dir, stderr, stdout, write_trace};
use retrace_models::KvModel as Kv;
use retrace_replayer::Replay;
use retrace_sim::trace::{FaultRecord, Record, Trace};
use retrace_sim::NodeId;
use retrace_tui::app::View;
use retrace_tui::{App, ModelSession};
use std::path::Path;
use std::time::Duration;

fn open(path: &Path) -> App {
    let replay = Replay::<Kv>::new(Trace::load(path).unwrap()).unwrap();
    let mut app =
        App::with_scan_budget(Box::new(ModelSession::new(replay)), Duration::from_secs(30));
    app.source = Some(path.to_path_buf());
    app
}

/// The first records of the branch's future: what the changes made at the moment.
fn future(app: &App) -> Vec<Record> {
    let trace = app.session.trace();
    let at = app.branch_at.expect("a branch says where it branched");
    trace.events[at..]
        .iter()
        .take(8)
        .map(|e| e.record.clone())
        .collect()
}

/// Re-executes the whole run shown: it must not diverge from its trace.
fn replays_clean(app: &mut App) {
    let end = app.session.steps().len();
    app.session.goto(end);
    assert!(
        app.session.divergence().is_none(),
        "the branch replays without divergence: {:?}",
        app.session.divergence()
    );
}

/// The row of the panel showing `node`.
fn node_row(app: &App, node: NodeId) -> usize {
    let w = app.what_if.as_ref().unwrap();
    w.moment.messages.len() + node.index()
}

fn fork_again(parent: &Path, at: u64, schedule: &Path, out: &Path) -> Vec<u8> {
    let o = retrace(&[
        "fork",
        parent.to_str().unwrap(),
        "--at",
        &at.to_string(),
        "--schedule",
        schedule.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(1),
        "{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    std::fs::read(out).unwrap()
}

#[test]
fn a_what_if_branch_drops_a_message_crashes_a_node_saves_and_forks_again_byte_for_byte() {
    let dir = scratch_dir("what-if");
    let original = write_trace::<Kv>(&dir, "kv-ack-before-replicate.toml", 7);
    let mut app = open(&original);
    let at = 400u64;
    app.press(&format!(":goto {at}<Enter>f"));
    assert_eq!(app.view, View::WhatIf, "{:?}", app.message);
    let (dropped, crashed) = {
        let w = app.what_if.as_ref().unwrap();
        assert!(
            !w.moment.messages.is_empty(),
            "messages are in flight at event {at}"
        );
        let crashed = (0..w.moment.up.len())
            .map(|i| NodeId(i as u32))
            .find(|&n| w.moment.up[n.index()])
            .expect("a node is up");
        (w.moment.messages[0].send, crashed)
    };
    // Drop the first message; crash a node that is up; run.
    app.press("x");
    let row = node_row(&app, crashed);
    app.press(&format!("{}c", "j".repeat(row)));
    assert_eq!(
        app.what_if.as_ref().unwrap().changes.len(),
        2,
        "{:?}",
        app.message
    );
    app.press("<Enter>");
    assert_eq!(app.view, View::Main, "{:?}", app.message);
    assert_eq!(app.branches.current, 1);
    let first = future(&app);
    assert!(
        first
            .iter()
            .any(|r| matches!(r, Record::Crash { node, .. } if *node == crashed)),
        "the crash happens at the moment: {first:?}"
    );
    assert!(
        first
            .iter()
            .any(|r| matches!(r, Record::Drop { send, .. } if *send == dropped)),
        "the message is dropped at the moment: {first:?}"
    );
    assert!(
        !app.session
            .trace()
            .events
            .iter()
            .any(|e| matches!(e.record, Record::Deliver { send, .. } if send == Some(dropped))),
        "the dropped message is never delivered"
    );
    replays_clean(&mut app);

    // Saving needs a place; the schedule lands beside the trace and makes it again.
    let saved = dir.join("branch.trace");
    app.press(&format!(":save {}<Enter>", saved.display()));
    let message = app.message.clone().unwrap_or_default();
    assert!(message.contains("saved"), "{message}");
    let schedule = dir.join("branch.schedule.json");
    let again = fork_again(&original, at, &schedule, &dir.join("again.trace"));
    assert!(
        again == std::fs::read(&saved).unwrap(),
        "`retrace fork --schedule` makes the saved branch again, byte for byte"
    );

    // One key back to the original, where it was left; the tree lists both.
    app.press("o");
    assert_eq!(app.branches.current, 0);
    assert_eq!(app.record_of(app.sel), at as usize);
    assert!(app.branch_at.is_none(), "the original is no fork");
    app.press("b");
    assert_eq!(app.view, View::Branches);
    assert_eq!(app.branches.order(), vec![0, 1]);
    app.press("j<Enter>");
    assert_eq!(app.branches.current, 1);
    assert_eq!(app.view, View::Main);

    // A branch of the branch: isolate a node a little later, with no other change.
    let later = app.branch_at.unwrap() as u64 + 40;
    app.press(&format!(":goto {later}<Enter>f"));
    assert_eq!(app.view, View::WhatIf, "{:?}", app.message);
    // The event list shows no log lines: the goto lands on the row at or before.
    let later = app.what_if.as_ref().unwrap().moment.at;
    let row = node_row(&app, NodeId(0));
    app.press(&format!("{}i<Enter>", "j".repeat(row)));
    assert_eq!(app.branches.current, 2);
    assert!(
        future(&app).iter().any(|r| matches!(
            r,
            Record::Fault(FaultRecord::Cut { links, .. })
                if links.iter().all(|&(a, b)| a == NodeId(0) || b == NodeId(0))
        )),
        "node 0 is cut off at the moment: {:?}",
        future(&app)
    );
    replays_clean(&mut app);
    app.press("b");
    assert_eq!(app.branches.order(), vec![0, 1, 2]);
    assert_eq!(app.branches.depth(2), 2);
    app.press("<Esc>");
    let nested = dir.join("nested.trace");
    app.press(&format!(":save {}<Enter>", nested.display()));
    let again = fork_again(
        &saved,
        later,
        &dir.join("nested.schedule.json"),
        &dir.join("nested-again.trace"),
    );
    assert!(
        again == std::fs::read(&nested).unwrap(),
        "a branch of a branch is made again from its parent's file"
    );
    app.press("o");
    assert_eq!(app.branches.current, 0);
}

#[test]
fn a_schedule_naming_a_message_not_in_flight_is_refused_with_the_file_named() {
    let dir = scratch_dir("what-if-bad");
    let original = write_trace::<Kv>(&dir, "kv-ack-before-replicate.toml", 7);
    let mut app = open(&original);
    app.press(":goto 400<Enter>fx<Enter>");
    let saved = dir.join("b.trace");
    app.press(&format!(":save {}<Enter>", saved.display()));
    let schedule = dir.join("b.schedule.json");
    let text = std::fs::read_to_string(&schedule).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["from"]["interventions"][0]["send"] = serde_json::json!(3);
    std::fs::write(&schedule, json.to_string()).unwrap();
    let o = retrace(&[
        "fork",
        original.to_str().unwrap(),
        "--at",
        "400",
        "--schedule",
        schedule.to_str().unwrap(),
        "-o",
        dir.join("x.trace").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("b.schedule.json") && err.contains("no message in flight"),
        "{err}"
    );
    // At another moment than the schedule's: said so, with the moment to use.
    let o = retrace(&[
        "fork",
        original.to_str().unwrap(),
        "--at",
        "401",
        "--schedule",
        schedule.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--at 400"), "{}", stderr(&o));
}

#[test]
fn changes_are_checked_against_the_moment() {
    use retrace_replayer::what_if::Moment;
    use retrace_sim::what_if::{check, INTERVENTIONS_MAX};
    use retrace_sim::Intervention::{Crash, Delay, Deliver, Drop, Restart};
    let dir = scratch_dir("what-if-check");
    let original = write_trace::<Kv>(&dir, "kv-ack-before-replicate.toml", 7);
    let replay = Replay::<Kv>::new(Trace::load(&original).unwrap()).unwrap();
    let moment = Moment::new(&replay, 400).unwrap();
    let point = &moment.point;
    let send = point.in_flight[0].send;
    let node = NodeId(0);
    let refused = |list: &[retrace_sim::Intervention], says: &str| {
        let e = check(point, list).expect_err(says).to_string();
        assert!(e.contains(says), "{e}");
    };
    assert!(check(
        point,
        &[
            Drop { send },
            Crash { node },
            Restart { node },
            Crash { node }
        ]
    )
    .is_ok());
    refused(&[Drop { send }, Deliver { send }], "change 2 (deliver #");
    refused(&[Drop { send }, Deliver { send }], "changed twice");
    refused(&[Drop { send: 3 }], "no message in flight");
    refused(&[Crash { node: NodeId(99) }], "the cluster has");
    refused(&[Crash { node }, Crash { node }], "down by then");
    refused(
        &[Delay {
            send,
            by_ns: u64::MAX,
        }],
        "a delay over",
    );
    refused(&vec![Crash { node }; INTERVENTIONS_MAX + 1], "at most");
    // A branch with a refused change does not run: the error says which change.
    let e = moment
        .branch(&replay, 1, &[Drop { send: 3 }])
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("change 1 (drop #3)"), "{e}");
}

#[test]
fn a_what_if_on_a_real_recording_replays_clean_and_its_schedule_makes_it_again() {
    let dir = scratch_dir("what-if-recorded");
    let merged = record_and_merge_kv(&dir);
    let mut app = open(&merged);
    let half = app.session.trace().events.len() / 2;
    app.press(&format!(":goto {half}<Enter>f"));
    assert_eq!(app.view, View::WhatIf, "{:?}", app.message);
    let (at, dropped) = {
        let w = app.what_if.as_ref().unwrap();
        (w.moment.at, w.moment.messages.first().map(|m| m.send))
    };
    if dropped.is_some() {
        app.press("x");
    }
    // Isolate replica-1: the rest of the recording's cluster goes on without it.
    let row = node_row(&app, NodeId(1));
    app.press(&format!("g{}i<Enter>", "j".repeat(row)));
    assert_eq!(app.branches.current, 1, "{:?}", app.message);
    if let Some(send) = dropped {
        assert!(future(&app)
            .iter()
            .any(|r| matches!(r, Record::Drop { send: s, .. } if *s == send)));
    }
    replays_clean(&mut app);
    let saved = dir.join("branch.trace");
    app.press(&format!(":save {}<Enter>", saved.display()));
    let again = fork_again(
        &merged,
        at,
        &dir.join("branch.schedule.json"),
        &dir.join("again.trace"),
    );
    assert!(again == std::fs::read(&saved).unwrap());
    let o = retrace(&["replay", saved.to_str().unwrap(), "--headless"]);
    assert!(stdout(&o).contains("replay    ok"), "{}", stdout(&o));
}
