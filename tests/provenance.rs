//! `retrace provenance` and faults as causes in `retrace why`: a value followed across
//! machines, and the partition and clock jump that changed what a step saw.

mod common;

use common::{retrace, scratch_dir, stderr, stdout};
use retrace::sim::trace::{FaultRecord, Record};
use retrace::sim::Trace;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn simulate(dir: &Path, scenario: &str) -> PathBuf {
    let out = dir.join("t.trace");
    let o = retrace(&["run", scenario, "-o", out.to_str().unwrap()]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    out
}

/// The lost write's value, as the violation names it, and the violation's index.
fn lost_value(trace: &Trace) -> (String, usize) {
    trace
        .events
        .iter()
        .find_map(|e| match &e.record {
            Record::Violation { message, .. } => Some((
                message.split('"').nth(1).unwrap().to_string(),
                e.index as usize,
            )),
            _ => None,
        })
        .expect("the scenario loses a write")
}

#[test]
fn provenance_of_the_lost_write_ends_at_the_crashed_primary_with_no_copy_sent() {
    let dir = scratch_dir("provenance-lost-write");
    let path = simulate(&dir, "scenarios/kv-ack-before-replicate.toml");
    let trace = Trace::load(&path).unwrap();
    let (value, violation) = lost_value(&trace);
    let o = retrace(&[
        "provenance",
        path.to_str().unwrap(),
        &violation.to_string(),
        &value,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    for expected in [
        "external request r",
        "put it in its state at .Replica.store.",
        "answered request r",
        "replica-0: CRASHED holding it",
        "expected on every replica, never arrived at:",
        "replica-1: no message carrying it was sent to it",
        "replica-2: no message carrying it was sent to it",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    // The answer went out while only the primary (among replicas) had the value.
    let answered = text
        .lines()
        .find(|l| l.contains("answered request"))
        .unwrap();
    assert!(answered.contains("replica-0"), "{answered}");
    assert!(
        !answered.contains("replica-1") && !answered.contains("replica-2"),
        "{answered}"
    );

    // The same as JSON, and asked from the primary's state where the value was stored.
    let o = retrace(&[
        "provenance",
        path.to_str().unwrap(),
        &violation.to_string(),
        &value,
        "--json",
    ]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let missing: Vec<u64> = v["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["node"].as_u64().unwrap())
        .collect();
    assert_eq!(missing, vec![1, 2]);
    let stored = v["forward"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["what"]["kind"] == "set" && l["node"] == 0)
        .expect("replica-0 stored it");
    let (event, path_in_state) = (
        stored["event"].as_u64().unwrap().to_string(),
        stored["what"]["path"].as_str().unwrap().to_string(),
    );
    let o = retrace(&["provenance", path.to_str().unwrap(), &event, &path_in_state]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    let back: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("where it came from"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert!(
        back[0].contains("replica-0: this step put it in its state"),
        "{text}"
    );
    assert!(back
        .iter()
        .any(|l| l.contains("replica-0: got it from client-")));
    assert!(
        back.last().unwrap().contains("external request r"),
        "{text}"
    );
}

#[test]
fn provenance_refuses_what_is_not_there_with_a_located_error() {
    let dir = scratch_dir("provenance-errors");
    let path = simulate(&dir, "scenarios/pingpong.toml");
    let o = retrace(&["provenance", path.to_str().unwrap(), "5", ".no.such.field"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no `.no.such.field`"), "{}", stderr(&o));
    let o = retrace(&["provenance", path.to_str().unwrap(), "99999999", ".x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no event 99999999"), "{}", stderr(&o));
}

/// `why` left network cuts and clock jumps out of the causal history, so a step that ran
/// without a message (cut off by an isolation) or on a jumped clock was not explained.
#[test]
fn why_names_the_isolation_and_the_clock_jump_that_changed_what_steps_saw() {
    let dir = scratch_dir("why-faults");
    let scenario = dir.join("ws.toml");
    std::fs::write(
        &scenario,
        r#"
model = "webstack"
seed = 5
time_limit = "3s"

[model_options]
clients = 2
webs = 2
pages = 50
day_ms = 3000
noon_ms = 2900
batch_duration_ms = 50

[network]
latency = "200us..1ms"

[workload]
rate = "50/s"

[[faults]]
at = "1s"
clock_jump = "cache"
by = "500ms"

[[faults]]
at = "1.5s"
isolate = "web-1"
heal_after = "300ms"
"#,
    )
    .unwrap();
    let path = simulate(&dir, scenario.to_str().unwrap());
    let trace = Trace::load(&path).unwrap();
    let jump = trace
        .events
        .iter()
        .position(|e| matches!(e.record, Record::Fault(FaultRecord::ClockJump { .. })))
        .unwrap();
    let cut = trace
        .events
        .iter()
        .position(|e| matches!(e.record, Record::Fault(FaultRecord::Cut { .. })))
        .unwrap();
    // The last step of the run: the cache (which reads its clock) and web-1 (cut off, then
    // back) are in its history.
    let last = trace
        .events
        .iter()
        .rposition(|e| e.record.input_node().is_some())
        .unwrap();
    let o = retrace(&["why", path.to_str().unwrap(), &last.to_string(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let faults: Vec<usize> = v["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_u64().unwrap() as usize)
        .collect();
    assert!(faults.contains(&jump), "the clock jump: {faults:?}");
    assert!(faults.contains(&cut), "the isolation: {faults:?}");
    for &f in &faults {
        assert!(
            matches!(
                trace.events[f].record,
                Record::Fault(_) | Record::Drop { .. }
            ),
            "{:?}",
            trace.events[f].record
        );
    }
    let drops = faults
        .iter()
        .filter(|&&f| matches!(trace.events[f].record, Record::Drop { .. }))
        .count();
    assert!(drops > 0, "messages the isolated web server never got");
    // In text, faults are marked among the events.
    let o = retrace(&[
        "why",
        path.to_str().unwrap(),
        &last.to_string(),
        "--limit",
        "100000",
    ]);
    let text = stdout(&o);
    assert!(text.contains("faults changed what they saw"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("! ") && l.contains("clock of cache jumps")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("! ") && l.contains("cut #0")),
        "{text}"
    );
}
