//! `retrace inevitable` names the cause where it is known by construction: the kill that
//! loses kv's acknowledged writes (the bug loses nothing without it), and the duplicated
//! vote of raft's double-vote bug (the fuzzer's only injected fault).

mod common;

use common::{retrace, scratch_dir, stderr, stdout, write_trace};
use retrace_models::KvModel as Kv;
use retrace_sim::trace::{Record, Trace};

/// The reading: the lines after `reading` and before the table.
fn reading(text: &str) -> String {
    text.lines()
        .skip_while(|l| !l.starts_with("reading"))
        .take_while(|l| !l.trim_start().starts_with("step"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn inevitable_names_the_kill_that_lost_kvs_acknowledged_write() {
    let dir = scratch_dir("inevitable-kv");
    let trace = write_trace::<Kv>(&dir, "kv-ack-before-replicate.toml", 7);
    let o = retrace(&["inevitable", trace.to_str().unwrap(), "--samples", "32"]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}\n{}", stderr(&o));
    let r = reading(&text);
    assert!(r.contains("one step made the failure inevitable"), "{text}");
    assert!(r.contains("replica-0  crash"), "the kill is named:\n{text}");
    assert!(text.contains("┤"), "the curve is drawn:\n{text}");
}

#[test]
fn inevitable_names_the_duplicated_vote_of_raft_double_vote_found_by_a_fixed_search() {
    let dir = scratch_dir("inevitable-raft");
    let o = retrace(&[
        "fuzz",
        "scenarios/raft-double-vote.toml",
        // A count of cases, not a time: with one job and a fixed master seed the search
        // is the same on every machine (CI's debug build ran out of its 60 s before the
        // failure). Master seed 3 finds it at case 241.
        "--seed",
        "3",
        "--cases",
        "2000",
        "--jobs",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let trace = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "trace"))
        .expect("the fuzzer wrote the failure's trace");
    // The planted cause: the network duplicated a vote, and the candidate, which counts
    // votes without asking who cast them, counted one voter twice. What was duplicated
    // depends on the search: the Vote itself, or the RequestVote its voter then granted
    // twice. The reading must name the duplication, or the duplicated message's delivery.
    let t = Trace::load(&trace).unwrap();
    let duplicated: Vec<u64> = t
        .events
        .iter()
        .filter_map(|e| match e.record {
            Record::Duplicate { send } => Some(send),
            _ => None,
        })
        .collect();
    assert!(
        !duplicated.is_empty(),
        "the failure needs a duplicated message"
    );
    let o = retrace(&["inevitable", trace.to_str().unwrap()]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}\n{}", stderr(&o));
    let r = reading(&text);
    assert!(
        duplicated
            .iter()
            .any(|s| r.contains(&format!("message of send #{s} duplicated"))
                || r.contains(&format!("(send #{s}) "))),
        "the duplicated vote is named:\n{text}"
    );
}

#[test]
fn inevitable_refuses_a_trace_where_nothing_broke() {
    let dir = scratch_dir("inevitable-none");
    let trace = write_trace::<retrace_models::RaftModel>(&dir, "raft.toml", 1);
    let o = retrace(&["inevitable", trace.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no invariant breaks in this trace"),
        "{}",
        stderr(&o)
    );
}
