//! Typed timers: a node's timer is a value of its own type (`Node::Timer`), recorded with
//! the trace, shown decoded, handed back to the node when it fires — in the simulator and in
//! replay alike — and counted by variant in the fuzzer's coverage.

mod common;
use common::*;

#[test]
fn traces_show_timers_by_name() {
    let dir = scratch_dir("timers-show");
    let trace = dir.join("kv.trace");
    let o = retrace(&["run", "scenarios/kv.toml", "-o", trace.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shown = stdout(&retrace(&[
        "show",
        trace.to_str().unwrap(),
        "--limit",
        "40",
    ]));
    assert!(
        shown.contains("timer-set    t0 Heartbeat in 20ms"),
        "{shown}"
    );
    assert!(shown.contains("Failover in"), "{shown}");
    // And the client's retry deadline, with the operation it belongs to.
    let all = stdout(&retrace(&["show", trace.to_str().unwrap()]));
    assert!(all.contains("Retry { op_id: 0 }"), "{}", &all[..2000]);
    // Replay hands node code the same typed values.
    let o = retrace(&["replay", trace.to_str().unwrap(), "--headless"]);
    assert!(stdout(&o).contains("replay    ok:"), "{}", stdout(&o));
}

#[test]
fn a_timer_carrying_an_operation_number_counts_as_one_handler() {
    // kv's clients set one retry timer per operation (`Retry { op_id }`): with the number in
    // the coverage key, every operation was a new "handler" (2,031 in 70 runs); by variant,
    // kv has a few dozen.
    let o = retrace(&[
        "fuzz",
        "scenarios/kv.toml",
        "--cases",
        "30",
        "--jobs",
        "1",
        "--seed",
        "77",
    ]);
    let text = stdout(&o);
    let covered: u64 = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(3)
        .find(|w| w[1] == "handlers" && w[2] == "covered,")
        .and_then(|w| w[0].replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no coverage figure in {text}"));
    assert!((10..100).contains(&covered), "{covered} handlers: {text}");
}
