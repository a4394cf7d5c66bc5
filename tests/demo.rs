//! `retrace demo` without a terminal: the whole loop on real processes, reported as text.

mod common;

use common::{retrace, scratch_dir, stderr, stdout};

#[test]
fn the_demo_records_kills_merges_replays_and_names_the_lost_write() {
    let dir = scratch_dir("demo");
    let o = retrace(&["demo", "--dir", dir.to_str().unwrap()]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    for expected in [
        "killed",
        "merged",
        "acknowledged write lost",
        "the lost write, request",
        "acknowledged it at event",
        "causal history of the acknowledgement",
        "explore:  retrace replay",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    // The incident replays faithfully: the SIGKILLed node's restart and lost log tail do
    // not make the replay diverge.
    let trace = dir.join("incident.trace");
    let o = retrace(&["replay", trace.to_str().unwrap()]);
    // Exit 1: the replay re-executed every step faithfully and found the violation.
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("replay    ok:"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("acknowledged write lost"),
        "{}",
        stdout(&o)
    );
    // The real processes' `tracing` lines are in the merged trace, on the primary.
    let o = retrace(&["show", trace.to_str().unwrap()]);
    assert!(
        stdout(&o).lines().any(|l| l.contains("replica-0")
            && l.contains(" log ")
            && l.contains("acknowledged before any backup has it")),
        "no log line of replica-0 in the merged trace"
    );
}
