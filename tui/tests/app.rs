//! The app driven by keys, as a user drives it, on a small fixed trace that loses a write.

mod common;

use common::{app, keys, screen, LOST_WRITE, STALE_READ};
use retrace_sim::trace::Record;
use retrace_tui::app::{Input, View};
use retrace_tui::App;

fn kind(app: &App) -> &'static str {
    app.session.trace().events[app.record_of(app.sel)]
        .record
        .kind()
}

fn text(app: &App) -> String {
    app.row_text(app.sel)
}

#[test]
fn it_opens_at_the_violation() {
    let app = app(LOST_WRITE);
    let (at, _) = app
        .timeline
        .recorded_violation
        .clone()
        .expect("the trace has a violation");
    assert_eq!(app.record_of(app.sel), at);
    assert!(app.session.steps().steps[app.step_of_row(app.sel).unwrap()].input == at);
}

#[test]
fn motions_step_rewind_and_repeat() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "g");
    assert_eq!(app.sel, 0);
    keys(&mut app, "jjj");
    assert_eq!(app.sel, 3);
    keys(&mut app, "2k");
    assert_eq!(app.sel, 1);
    keys(&mut app, "10j");
    assert_eq!(app.sel, 11);
    keys(&mut app, "G");
    assert_eq!(app.sel, app.rows() - 1);
    keys(&mut app, "40G");
    assert_eq!(app.sel, app.timeline.row_of(40));
    // Rewinding shows the same state a fresh replay shows at that point.
    keys(&mut app, "G5k");
    let row = app.sel;
    let step = app.step_of_row(row).unwrap();
    assert_eq!(app.session.position(), step + 1);
    let rewound = app.detail.states.after.clone();
    let mut fresh = common::app(LOST_WRITE);
    keys(&mut fresh, "g");
    fresh.select(row);
    assert_eq!(fresh.detail.states.after, rewound);
    assert!(rewound.is_some());
}

#[test]
fn same_node_motion_skips_other_nodes() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "g");
    let node = app.node_of_row(app.sel).unwrap();
    let from = app.sel;
    keys(&mut app, "l");
    assert_eq!(app.node_of_row(app.sel), Some(node));
    assert!((from + 1..app.sel).all(|r| app.node_of_row(r) != Some(node)));
    keys(&mut app, "h");
    assert_eq!(app.sel, from);
}

#[test]
fn breakpoints_stop_forward_and_backward() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, ":break msg ViewChange<Enter>");
    assert_eq!(app.breakpoints.len(), 1);
    keys(&mut app, "gc");
    assert!(text(&app).contains("ViewChange {"), "{}", text(&app));
    let first = app.sel;
    keys(&mut app, "c");
    assert!(app.sel > first);
    assert!(text(&app).contains("ViewChange {"), "{}", text(&app));
    keys(&mut app, "C");
    assert_eq!(app.sel, first);
    // An invalid predicate is refused with a message naming the choices.
    keys(&mut app, ":break frob<Enter>");
    assert_eq!(app.breakpoints.len(), 1);
    assert!(app
        .message
        .as_deref()
        .unwrap_or("")
        .contains("unknown predicate"));
    keys(&mut app, ":delete<Enter>");
    assert!(app.breakpoints.is_empty());
}

#[test]
fn why_highlights_exactly_the_causal_history() {
    let mut app = app(LOST_WRITE);
    let step = app.step_of_row(app.sel).unwrap();
    keys(&mut app, "w");
    let h = app.highlight.clone().expect("highlight");
    let mut expected = app.causality.why(step);
    expected.push(step);
    expected.sort_unstable();
    assert_eq!(h.steps, expected);
    // `[` walks back through the highlighted events only.
    keys(&mut app, "[");
    let s = app.step_of_row(app.sel).unwrap();
    assert!(h.contains(s) && s < step);
    keys(&mut app, "w");
    assert!(
        app.highlight.is_some(),
        "w elsewhere highlights that event's history"
    );
    keys(&mut app, "<Esc>");
    assert!(app.highlight.is_none());
}

#[test]
fn request_follows_one_request_across_nodes() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "g/external<Enter>");
    assert_eq!(kind(&app), "external");
    let r = app.requests_of_row(app.sel)[0];
    keys(&mut app, "r");
    let h = app.highlight.clone().expect("highlight");
    assert_eq!(h.steps, app.causality.request(r).to_vec());
    let nodes: std::collections::BTreeSet<_> = h
        .steps
        .iter()
        .map(|&s| app.session.steps().steps[s].node)
        .collect();
    assert!(nodes.len() >= 2, "a request crosses client and replica");
    for &s in &h.steps {
        let input = app.session.steps().steps[s].input;
        let carries = app.session.trace().events[input]
            .record
            .request_ids()
            .contains(&r);
        assert!(carries, "event {input} does not carry {r}");
    }
    // `]` visits them in order.
    keys(&mut app, "]");
    assert_eq!(app.step_of_row(app.sel), Some(h.steps[1]));
}

#[test]
fn profile_opens_for_the_selected_request_and_goes_back() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "g/external<Enter>p");
    assert_eq!(app.view, View::Profile);
    let p = app.profile.clone().expect("profile");
    assert!(p.latency_ns > 0 && !p.path.is_empty());
    assert_eq!(p.path.iter().map(|h| h.ns).sum::<u64>(), p.latency_ns);
    keys(&mut app, "<Enter>");
    assert_eq!(app.view, View::Main);
    assert_eq!(app.record_of(app.sel), p.path[0].event);
}

#[test]
fn search_command_line_and_bookmarks() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "g/put<Enter>");
    assert!(text(&app).contains("Put"));
    let first = app.sel;
    keys(&mut app, "n");
    assert!(app.sel > first && text(&app).contains("Put"));
    keys(&mut app, "N");
    assert_eq!(app.sel, first);
    keys(&mut app, ":bookmark here<Enter>G:goto here<Enter>");
    assert_eq!(app.sel, first);
    keys(&mut app, ":goto 100ms<Enter>");
    let t = app.session.trace().events[app.record_of(app.sel)].time_ns - app.timeline.base_ns;
    assert!(t >= 100_000_000, "{t}");
    keys(&mut app, ":frobnicate<Enter>");
    assert!(app.message.as_deref().unwrap().contains("unknown command"));
    keys(&mut app, ":goto 99999<Enter>");
    assert!(app.message.as_deref().unwrap().contains("no event 99999"));
    keys(&mut app, ":wh<Backspace><Backspace><Backspace>");
    assert_eq!(app.input, Input::Normal);
    keys(&mut app, "q");
    assert!(app.quit);
}

#[test]
fn a_huge_count_is_a_jump_not_a_hang() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "g99999999999j");
    assert_eq!(app.sel, app.rows() - 1);
}

#[test]
fn every_size_renders_and_tiny_ones_say_so() {
    let mut app = app(LOST_WRITE);
    assert!(screen(&mut app, 50, 10).contains("terminal too small"));
    for (w, h) in [(60, 16), (80, 24), (200, 60), (61, 17)] {
        let s = screen(&mut app, w, h);
        assert!(s.contains("j/k event"), "{w}x{h}:\n{s}");
    }
}

/// The first `+` used to narrow the lanes: it started from the setting's zero (3 + 1 = 4
/// columns) instead of the width on screen.
#[test]
fn plus_widens_the_lanes_from_the_width_shown_and_minus_narrows_them() {
    let mut a = app(LOST_WRITE);
    screen(&mut a, 160, 50);
    let shown = a.lane_width_shown;
    assert!(shown >= 3, "{shown}");
    keys(&mut a, "+");
    screen(&mut a, 160, 50);
    assert_eq!(a.lane_width_shown, shown + 1);
    keys(&mut a, "--");
    screen(&mut a, 160, 50);
    assert_eq!(a.lane_width_shown, shown - 1);
}

/// The demo's hints `:goto kill` and `:goto violation` failed under `retrace replay` of the
/// same trace ("no bookmark"): the bookmarks a trace opens with exist for every trace.
#[test]
fn every_trace_opens_with_bookmarks_for_its_violation_and_each_crash() {
    let mut a = app(LOST_WRITE);
    let opened_at = a.sel; // the violation
    assert_ne!(opened_at, 0);
    keys(&mut a, "g:goto violation<Enter>");
    assert_eq!(a.sel, opened_at, "{:?}", a.message);
    keys(&mut a, "g:goto crash<Enter>");
    assert_eq!(kind(&a), "crash", "{:?}", a.message);
    let crash = a.sel;
    keys(&mut a, "g:goto crash-replica-0<Enter>");
    assert_eq!(a.sel, crash, "{:?}", a.message);
    keys(&mut a, ":goto nothing<Enter>");
    let said = a.message.clone().unwrap_or_default();
    assert!(
        said.contains("bookmarks: crash, crash-replica-0, violation"),
        "{said}"
    );
}

#[test]
fn a_linearizability_violation_opens_with_a_bookmark_at_each_operation_of_its_witness() {
    let mut a = app(STALE_READ);
    keys(&mut a, ":goto nothing<Enter>");
    let said = a.message.clone().unwrap_or_default();
    let ops: Vec<&str> = said
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| w.starts_with("op-r"))
        .collect();
    assert!(ops.len() >= 2, "the witness's operations: {said}");
    for op in ops {
        keys(&mut a, &format!("g:goto {op}<Enter>"));
        assert_eq!(kind(&a), "external", "{op}: {:?}", a.message);
        assert!(text(&a).contains(&op[3..]), "{op}: {}", text(&a));
    }
}

/// `:break invariant` and `:break state replica-1 Candidate`, then `c`, stopped at every
/// later event once the predicate held: watches fire where they become true, forward and
/// backward, as gdb watchpoints fire on change.
#[test]
fn state_and_invariant_breakpoints_fire_where_they_become_true() {
    let mut tested_backward = false;
    for watch in ["invariant", "state replica-1 Candidate"] {
        let mut a = app(LOST_WRITE);
        keys(&mut a, &format!(":break {watch}<Enter>gc"));
        let hit = a.sel;
        assert!(hit > 0, "{watch}: {:?}", a.message);
        assert!(
            a.message
                .as_deref()
                .unwrap_or("")
                .starts_with("breakpoint:"),
            "{watch}: {:?}",
            a.message
        );
        keys(&mut a, "c");
        assert_eq!(
            a.message.as_deref(),
            Some("no breakpoint hit before the end"),
            "{watch}: `c` again must not stop at the next event that still holds it"
        );
        keys(&mut a, "G");
        if a.step_of_row(a.sel) > a.step_of_row(hit) {
            keys(&mut a, "C");
            assert_eq!(a.sel, hit, "{watch}: `C` goes back to where it became true");
            tested_backward = true;
        }
    }
    assert!(tested_backward, "one watch became true before the end");
}

/// At 80×24 the event description and the state pane disappeared, and the violation text
/// was cut off: the detail gets half of a small screen, long text wraps, and in one column
/// what broke and the state change come first.
#[test]
fn at_80x24_the_event_what_broke_and_the_state_change_stay_visible() {
    let mut app = app(LOST_WRITE);
    let s = screen(&mut app, 80, 24);
    assert!(s.contains("deliver replica-2 at +"), "{s}");
    assert!(s.contains("broken after this"), "{s}");
    // The violation's text ends on screen, not cut: its last value is there.
    assert!(s.contains("= \"vf00535f5\""), "{s}");
    assert!(s.contains("changed (4):"), "{s}");
    assert!(s.contains(".Replica.epoch: 0 -> 2"), "{s}");
}

/// `w` on the lost write lit nearly every earlier step ("everything before it" is true and
/// useless): it offers the event's request first, the whole history one key away.
#[test]
fn w_narrows_to_the_events_request_and_capital_w_shows_the_whole_history() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "g/Reply {<Enter>3n");
    let step = app.own_step(app.sel).expect("a step");
    let r = app.requests_of_row(app.sel)[0];
    let mut full = app.causality.why(step);
    full.push(step);
    full.sort_unstable();
    keys(&mut app, "w");
    let h = app.highlight.clone().expect("highlight");
    assert!(h.label.contains(&format!("request {r}")), "{}", h.label);
    assert!(
        h.steps.len() < full.len(),
        "{} of {}",
        h.steps.len(),
        full.len()
    );
    for &s in &h.steps {
        assert!(full.binary_search(&s).is_ok());
        assert!(s == step || app.causality.request(r).contains(&s));
    }
    assert!(app
        .message
        .as_deref()
        .unwrap_or("")
        .contains("`W`: all of them"));
    keys(&mut app, "W");
    assert_eq!(app.highlight.clone().expect("highlight").steps, full);
    keys(&mut app, "W");
    assert!(app.highlight.is_none(), "W again clears");
}

/// The root cause without a script: `v` on the value the broken invariant names shows it was
/// acknowledged while only the primary had it, which crashed, and no backup ever got it.
#[test]
fn v_on_the_lost_value_follows_it_to_the_crashed_primary_and_no_backup() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "v");
    assert_eq!(app.view, View::Value);
    let first = app.value.as_ref().unwrap().picks[0].label.clone();
    assert!(first.contains("named by the broken invariant"), "{first}");
    keys(&mut app, "<Enter>");
    let answer = app
        .value
        .as_ref()
        .unwrap()
        .answer
        .clone()
        .expect("an answer");
    let text: Vec<&str> = answer.lines.iter().map(|(_, l)| l.as_str()).collect();
    let all = text.join("\n");
    for expected in [
        "replica-0: this step put it in its state at .Replica.store.",
        "replica-0: CRASHED holding it",
        "expected on every replica, never arrived at:",
        "replica-1: no message carrying it was sent to it",
        "replica-2: no message carrying it was sent to it",
    ] {
        assert!(all.contains(expected), "missing `{expected}` in:\n{all}");
    }
    let answered = text
        .iter()
        .find(|l| l.contains("answered request"))
        .unwrap();
    assert!(answered.contains("held by replica-0") && !answered.contains("replica-1"));
    assert!(screen(&mut app, 120, 40).contains("never arrived at"));
    // Enter on a line goes to its event, with the value's story highlighted.
    let crash = text.iter().position(|l| l.contains("CRASHED")).unwrap();
    let sel = answer.sel;
    let moves = if crash < sel {
        "k".repeat(sel - crash)
    } else {
        "j".repeat(crash - sel)
    };
    keys(&mut app, &moves);
    keys(&mut app, "<Enter>");
    assert_eq!(app.view, View::Main);
    assert_eq!(kind(&app), "crash");
    let h = app.highlight.clone().expect("the story is highlighted");
    assert!(h.label.starts_with("value "), "{}", h.label);
    // `w` on the crash (no request) narrows to the value's story.
    keys(&mut app, "w");
    let h = app.highlight.clone().expect("highlight");
    assert!(h.label.contains("(value "), "{}", h.label);
}

#[test]
fn t_puts_time_on_the_diagram_axis_and_folds_quiet_stretches() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "t");
    let unit = app.time_axis_ns.expect("time axis");
    let text = screen(&mut app, 120, 40);
    assert!(text.contains(" time ↓ "), "{text}");
    // Quiet stretches are folded into a line that says how long.
    let folded = text
        .lines()
        .filter(|l| l.contains('┆') && l.contains("ms "))
        .count();
    assert!(folded > 0, "{text}");
    keys(&mut app, "z");
    assert_eq!(app.time_axis_ns, Some(unit * 2));
    keys(&mut app, "t");
    assert_eq!(app.time_axis_ns, None);
    assert!(screen(&mut app, 120, 40).contains(" events ↓ "));
}

/// `w` left cuts and drops out of the history: a step that ran without a message (its node
/// cut off) was not explained. They are lit, and marked `!` in the list.
#[test]
fn capital_w_lights_the_cut_and_drops_that_changed_what_the_history_saw() {
    let source = r#"
model = "kv"
seed = 4
time_limit = "400ms"

[model_options]
replicas = 3
clients = 1
keys = 2

[network]
latency = "1ms..3ms"

[workload]
rate = "100/s"
start = "10ms"

[[faults]]
at = "100ms"
isolate = "replica-2"
heal_after = "100ms"
"#;
    let mut app = app(source);
    keys(&mut app, "G");
    // The last step of the run.
    while app.own_step(app.sel).is_none() {
        keys(&mut app, "k");
    }
    keys(&mut app, "W");
    let h = app.highlight.clone().expect("highlight");
    assert!(!h.records.is_empty(), "{:?}", app.message);
    let events = &app.session.trace().events;
    assert!(h.records.iter().any(|&r| matches!(
        events[r].record,
        Record::Fault(retrace_sim::trace::FaultRecord::Cut { .. })
    )));
    assert!(h
        .records
        .iter()
        .any(|&r| matches!(events[r].record, Record::Drop { .. })));
    assert!(app
        .message
        .as_deref()
        .unwrap_or("")
        .contains("changed what they saw"));
    let cut_row = app.timeline.row_of(
        *h.records
            .iter()
            .find(|&&r| matches!(events[r].record, Record::Fault(_)))
            .unwrap(),
    );
    assert!(app.lit(cut_row));
    // In the list, the cut's row is marked `!`.
    let cut_event = app.record_of(cut_row);
    keys(&mut app, &format!(":goto {cut_event}<Enter>"));
    keys(&mut app, "j");
    let text = screen(&mut app, 160, 50);
    assert!(
        text.lines()
            .any(|l| l.contains("│! ") && l.contains("cut #0")),
        "{text}"
    );
}

/// A request that arrived over HTTP shows as it was on the wire: the request line, every
/// header, the body; its answer's step shows the response.
#[test]
fn a_request_that_came_over_http_shows_its_request_and_response_in_the_detail() {
    let source = LOST_WRITE.replace("[workload]\n", "[workload]\nprotocol = \"http\"\n");
    let mut app = app(&source);
    let events = &app.session.trace().events;
    let put = events
        .iter()
        .position(|e| matches!(&e.record, Record::HttpRequest { http, .. } if http.method == "PUT"))
        .expect("a PUT over HTTP");
    let external = events[..put]
        .iter()
        .rposition(|e| matches!(e.record, Record::External { .. }))
        .unwrap();
    let request = match &events[put].record {
        Record::HttpRequest { request, .. } => *request,
        _ => unreachable!(),
    };
    let answered = events
        .iter()
        .position(|e| matches!(&e.record, Record::HttpResponse { request: r, .. } if *r == request))
        .expect("the PUT was answered");
    let answer_step = events[..answered]
        .iter()
        .rposition(|e| e.record.input_node().is_some())
        .unwrap();
    keys(&mut app, &format!(":goto {external}<Enter>"));
    let s = screen(&mut app, 140, 60);
    assert!(
        s.contains(&format!("arrived over HTTP ({request}):")),
        "{s}"
    );
    assert!(s.contains("  PUT /kv/k"), "{s}");
    assert!(s.contains("  Content-Type: text/plain"), "{s}");
    assert!(s.contains("  body: \"v"), "{s}");
    keys(&mut app, &format!(":goto {answer_step}<Enter>"));
    let s = screen(&mut app, 140, 60);
    assert!(
        s.contains(&format!("answered over HTTP ({request}):")),
        "{s}"
    );
    assert!(s.contains("  200 OK"), "{s}");
}

/// A black-box service is a lane of its own: the node's writes go into it, its answers come
/// out of it, and the detail shows the bytes each way.
#[test]
fn a_service_is_a_lane_with_the_writes_into_it_and_the_answers_out_of_it() {
    use retrace_models::webcache::WebcacheModel;
    use retrace_sim::{scenario, Simulation, Trace, TraceSink};
    let source = include_str!("../../scenarios/webcache.toml");
    let s = scenario::parse::<WebcacheModel>("webcache.toml", source).unwrap();
    let report = Simulation::<WebcacheModel>::new(&s, s.seed, TraceSink::Memory).run();
    let trace = Trace::from_bytes(&report.trace.unwrap(), "webcache").unwrap();
    let replay = retrace_replayer::Replay::<WebcacheModel>::new(trace).unwrap();
    let mut app = App::with_scan_budget(
        Box::new(retrace_tui::ModelSession::new(replay)),
        std::time::Duration::from_secs(30),
    );
    let events = &app.session.trace().events;
    let answer = events
        .iter()
        .position(|e| {
            matches!(&e.record, Record::ServiceIn { event: retrace_sim::ServiceEvent::Data { bytes }, .. }
                if bytes.starts_with(b"$-1"))
        })
        .expect("a cache miss");
    keys(&mut app, &format!(":goto {answer}<Enter>"));
    let s = screen(&mut app, 160, 50);
    assert!(s.contains("[cache]"), "the service has a lane:\n{s}");
    assert!(s.contains("service-in"), "{s}");
    // RESP, decoded by the model's codec.
    assert!(s.contains("data 5 bytes (nil)"), "{s}");
    // On the selected row, a line from the cache's lane to the node's.
    let row = s
        .lines()
        .find(|l| l.contains("service-in") && l.contains("(nil)"))
        .unwrap();
    assert!(row.contains('─') && row.contains('●'), "{row}");
    // A request's step writes to the cache: a dotted line into its lane.
    keys(&mut app, "gg");
    let external = app
        .session
        .trace()
        .events
        .iter()
        .position(|e| matches!(e.record, Record::External { .. }))
        .unwrap();
    keys(&mut app, &format!(":goto {external}<Enter>"));
    let s = screen(&mut app, 160, 50);
    assert!(s.contains('┈'), "{s}");
}

/// A fork of the lost-write trace, at event `at`, with another seed.
fn forked_app(at: u64) -> (App, usize) {
    use retrace_models::kv::KvModel;
    use retrace_replayer::fork::fork;
    use retrace_replayer::Replay;
    let replay = Replay::<KvModel>::new(common::trace(LOST_WRITE)).unwrap();
    let run = fork(
        &replay,
        at,
        99,
        &retrace_sim::ForkFuture::default(),
        retrace_sim::TraceSink::Memory,
    )
    .unwrap()
    .run();
    let trace = retrace_sim::Trace::from_bytes(&run.trace.unwrap(), "fork").unwrap();
    let retrace_sim::trace::Origin::Forked { at: first, .. } = trace.header.origin else {
        panic!("a fork says so")
    };
    let replay = Replay::<KvModel>::new(trace).unwrap();
    let app = App::with_scan_budget(
        Box::new(retrace_tui::ModelSession::new(replay)),
        std::time::Duration::from_secs(30),
    );
    (app, first as usize)
}

#[test]
fn a_fork_shows_where_it_branched() {
    let (mut app, first) = forked_app(60);
    assert_eq!(app.branch_at, Some(first));
    keys(&mut app, "g");
    assert!(screen(&mut app, 160, 50).contains("before the fork at event"));
    keys(&mut app, &format!("{first}G"));
    assert_eq!(app.record_of(app.sel), first);
    assert!(screen(&mut app, 160, 50).contains(&format!("the fork's future (from event {first})")));
    keys(&mut app, "k");
    let shown = screen(&mut app, 160, 50);
    assert!(
        shown.lines().any(|l| l.contains(&format!("» {first:>7}"))),
        "the list marks the branch:\n{shown}"
    );
}

#[test]
fn the_inevitability_curve_names_the_kill_and_enter_goes_there() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "I");
    assert_eq!(app.view, View::Inevitable);
    let shown = screen(&mut app, 160, 50);
    assert!(shown.contains("become inevitable"), "{shown}");
    assert!(shown.contains('┤'), "the curve is drawn:\n{shown}");
    assert!(shown.contains("one step made it inevitable"), "{shown}");
    keys(&mut app, "<Enter>");
    assert_eq!(app.view, View::Main);
    assert_eq!(
        kind(&app),
        "crash",
        "Enter goes to the step it names: the kill"
    );
    // Measured once: back and forth shows the same curve.
    let forks = app.curve.as_ref().map(|c| c.forks);
    keys(&mut app, "I<Esc>");
    assert_eq!(app.view, View::Main);
    assert_eq!(app.curve.as_ref().map(|c| c.forks), forks);
}

/// The deliveries of message `send` in the run shown, with their times.
fn deliveries(app: &App, send: u64) -> Vec<u64> {
    app.session
        .trace()
        .events
        .iter()
        .filter(|e| matches!(e.record, Record::Deliver { send: Some(s), .. } if s == send))
        .map(|e| e.time_ns)
        .collect()
}

#[test]
fn what_if_delivers_now_delays_and_duplicates_messages_by_key() {
    let mut app = app(LOST_WRITE);
    // The first event (from 60) after which three messages are in flight.
    let at = (60..300)
        .find(|at| {
            keys(&mut app, &format!("g{at}Gf"));
            let found = app
                .what_if
                .as_ref()
                .is_some_and(|w| w.moment.messages.len() >= 3);
            if !found {
                keys(&mut app, "<Esc>");
            }
            found && app.record_of(app.sel) == *at
        })
        .expect("a moment with three messages in flight");
    assert_eq!(app.view, View::WhatIf, "{:?}", app.message);
    let (moment_ns, sends) = {
        let w = app.what_if.as_ref().unwrap();
        let sends: Vec<u64> = w.moment.messages.iter().map(|m| m.send).collect();
        (w.moment.time_ns, sends)
    };
    let shown = screen(&mut app, 160, 50);
    assert!(
        shown.contains(&format!("what if, after event {at}")),
        "{shown}"
    );
    assert!(shown.contains(&format!("#{}", sends[0])), "{shown}");
    // n on the first, d twice on the second (10ms, then 100ms), D on the third; an undo
    // and a redo; a node key on a message says what it is for.
    keys(&mut app, "njddjDuDc");
    assert!(app
        .message
        .as_deref()
        .unwrap_or("")
        .contains("change a node"));
    let w = app.what_if.as_ref().unwrap();
    assert_eq!(w.changes.len(), 3, "{:?}", w.changes);
    assert!(screen(&mut app, 160, 50).contains("delay #"));
    let seed = app.what_if.as_ref().unwrap().seed;
    keys(&mut app, "s");
    assert_eq!(app.what_if.as_ref().unwrap().seed, seed + 1);
    keys(&mut app, "<Enter>");
    assert_eq!(app.view, View::Main, "{:?}", app.message);
    assert_eq!(app.branches.current, 1);
    let fork = app.branch_at.unwrap();
    let now = deliveries(&app, sends[0]);
    assert_eq!(now.len(), 1);
    assert_eq!(now[0], moment_ns, "delivered at the moment itself");
    let first_step = app
        .session
        .steps()
        .steps
        .iter()
        .find(|s| s.input >= fork)
        .unwrap();
    assert!(
        matches!(app.session.trace().events[first_step.input].record, Record::Deliver { send: Some(s), .. } if s == sends[0]),
        "the message delivered now is the branch's first step"
    );
    let delayed = deliveries(&app, sends[1]);
    assert!(
        delayed.iter().all(|&t| t >= moment_ns + 100_000_000),
        "delayed by 100ms: {delayed:?} vs {moment_ns}"
    );
    assert_eq!(
        deliveries(&app, sends[2]).len(),
        2,
        "duplicated: delivered twice"
    );
    assert!(app.session.trace().events[fork..]
        .iter()
        .any(|e| matches!(e.record, Record::Duplicate { send } if send == sends[2])));
    let end = app.session.steps().len();
    app.session.goto(end);
    assert!(app.session.divergence().is_none());
    // The status line says which branch this is; o is the original, one key.
    assert!(screen(&mut app, 160, 50).contains("branch 1"));
    keys(&mut app, "o");
    assert_eq!(app.branches.current, 0);
    assert_eq!(app.record_of(app.sel), at);
    assert!(!screen(&mut app, 160, 50).contains("branch 1"));
    // The original's file is not known here: saving a branch says why it cannot.
    keys(&mut app, "bj<Enter>");
    assert_eq!(app.branches.current, 1);
    keys(&mut app, ":save /nonexistent/x.trace<Enter>");
    assert!(
        app.message
            .as_deref()
            .unwrap_or("")
            .contains("file is not known"),
        "{:?}",
        app.message
    );
}

#[test]
fn what_if_crashing_a_node_that_is_down_is_refused_and_esc_leaves_the_panel() {
    let mut app = app(LOST_WRITE);
    // After the kill, replica-0 (node 0) is down.
    keys(&mut app, ":goto crash<Enter>f");
    assert_eq!(app.view, View::WhatIf, "{:?}", app.message);
    let row = app.what_if.as_ref().unwrap().moment.messages.len();
    assert!(!app.what_if.as_ref().unwrap().moment.up[0]);
    keys(&mut app, &format!("{}c", "j".repeat(row)));
    assert!(
        app.message.as_deref().unwrap_or("").contains("down"),
        "{:?}",
        app.message
    );
    assert!(app.what_if.as_ref().unwrap().changes.is_empty());
    // A restart is fine, and then a crash is too.
    keys(&mut app, "rc");
    assert_eq!(app.what_if.as_ref().unwrap().changes.len(), 2);
    keys(&mut app, "<Esc>");
    assert_eq!(app.view, View::Main);
    assert!(app.branches.list.is_empty(), "nothing ran");
    keys(&mut app, "b");
    assert!(app
        .message
        .as_deref()
        .unwrap_or("")
        .contains("no branches yet"));
}

#[test]
fn a_branch_opens_at_the_first_breakpoint_after_the_moment_else_at_its_violation() {
    let mut app = app(LOST_WRITE);
    keys(&mut app, "g60Gf<Enter>");
    assert_eq!(app.branches.current, 1, "{:?}", app.message);
    let fork = app.branch_at.unwrap();
    let violation = app.timeline.recorded_violation.clone().map(|(i, _)| i);
    let message = app.message.clone().unwrap_or_default();
    match violation {
        Some(i) => {
            assert_eq!(
                app.record_of(app.sel),
                i,
                "opened at the violation: {message}"
            );
            assert!(message.contains('✗'), "{message}");
        }
        None => assert_eq!(app.record_of(app.sel), fork, "{message}"),
    }
    // With a breakpoint, the branch opens where it first holds after the moment.
    keys(&mut app, "o:break node replica-2<Enter>g60Gf<Enter>");
    assert_eq!(app.branches.current, 2, "{:?}", app.message);
    let fork = app.branch_at.unwrap();
    assert!(app.record_of(app.sel) >= fork);
    assert!(text(&app).contains("replica-2"), "{}", text(&app));
    assert!(app.message.as_deref().unwrap_or("").contains("breakpoint"));
    // Both branches hang off the original.
    assert_eq!(app.branches.depth(1), 1);
    assert_eq!(app.branches.depth(2), 1);
}
