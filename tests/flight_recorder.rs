//! A cluster recorded as a flight recorder: logs in small segments that rotate, retention
//! deleting the oldest, snapshots of every node — and what is left on disk still verifies,
//! merges and replays, from the snapshots where the start of a life was deleted.

mod common;

use common::*;
use retrace_models::KvModel;
use retrace_recorder::log::LogRecord;
use retrace_recorder::manifest::Manifest;
use retrace_recorder::segments::{node_log_bytes, read_segments};
use retrace_recorder::verify::verify_log;
use std::path::Path;

const RETAIN_BYTES: u64 = 64 << 10;

fn record(dir: &Path, extra: &[&str]) -> Manifest {
    let mut args = vec![
        "cluster",
        "scenarios/kv.toml",
        "--record",
        dir.to_str().unwrap(),
        "--closed-loop",
        "4",
        "--segment-size",
        "16KiB",
    ];
    args.extend_from_slice(extra);
    let o = retrace(&args);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    Manifest::read(dir).expect("manifest")
}

#[test]
fn a_retained_recording_verifies_merges_and_replays_from_its_snapshots() {
    let dir = scratch_dir("flight");
    // kv.toml SIGKILLs two replicas: lives end mid-segment, maybe mid-rotation.
    let manifest = record(
        &dir,
        &[
            "--duration",
            "4s",
            "--retain",
            "64KiB",
            "--snapshot-every",
            "100ms",
        ],
    );
    let mut resumed = 0;
    for n in &manifest.nodes {
        // Retention keeps room for the segment being written, so a node stays within its
        // bound (plus at most one step written after the segment filled).
        let kept = node_log_bytes(&dir, &n.name);
        assert!(kept <= RETAIN_BYTES + 4096, "{} keeps {kept} bytes", n.name);
        for inc in &n.incarnations {
            match read_segments(&dir, &n.name, &inc.log) {
                Ok(read) => resumed += usize::from(read.starts_at_snapshot()),
                Err(e) => assert!(
                    e.to_string().contains("deleted by retention"),
                    "{}: {e}",
                    inc.log
                ),
            }
        }
    }
    assert!(resumed > 0, "retention deleted the start of some life");

    let o = retrace(&["verify", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("snapshot (segments before it deleted by retention)"),
        "{}",
        stderr(&o)
    );
    let matched: u64 = stdout(&o)
        .split("re-executed, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("{}", stdout(&o)));
    assert!(matched > 0, "{}", stdout(&o));

    let trace = dir.join("incident.trace");
    let o = retrace(&[
        "merge",
        dir.to_str().unwrap(),
        "-o",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = retrace(&["replay", trace.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("replay    ok:"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = retrace(&["show", trace.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("resume"),
        "the trace says where nodes resume"
    );
    for format in ["otlp", "jaeger", "perfetto"] {
        let out = dir.join(format!("t.{format}.json"));
        let o = retrace(&[
            "export",
            trace.to_str().unwrap(),
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{format}: {}", stderr(&o));
    }
}

#[test]
fn a_snapshot_that_does_not_match_re_execution_is_a_mismatch() {
    let dir = scratch_dir("flight-tamper");
    let manifest = record(
        &dir,
        &[
            "--duration",
            "2s",
            "--retain",
            "all",
            "--snapshot-every",
            "50",
        ],
    );
    let scenario =
        retrace_sim::scenario::parse::<KvModel>("kv.toml", &manifest.scenario_toml).unwrap();
    // replica-2 is never killed: one life, rotated several times.
    let life = &manifest.nodes[2].incarnations[0].log;
    let read = read_segments(&dir, "replica-2", life).unwrap();
    assert!(read.segments > 1, "the life rotated");
    let done = verify_log::<KvModel>(&scenario, &read.log, read.first_record, life)
        .expect("the recorded log verifies");
    assert!(done.snapshots > 2, "{done:?}");

    let at = read
        .log
        .records
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, LogRecord::Snapshot { .. }))
        .nth(1)
        .map(|(i, _)| i)
        .unwrap();
    let tampered = |change: &dyn Fn(&mut retrace_sim::NodeSnapshot)| {
        let mut log = read_segments(&dir, "replica-2", life).unwrap().log;
        if let LogRecord::Snapshot { snapshot, .. } = &mut log.records[at] {
            change(snapshot);
        }
        verify_log::<KvModel>(&scenario, &log, read.first_record, life).unwrap_err()
    };
    let m = tampered(&|s| s.rng.background_position += 1);
    assert!(m.actual.contains("random generator"), "{m}");
    assert_eq!(m.record as u64, at as u64 + read.first_record, "{m}");
    let m = tampered(&|s| s.timers.clear());
    assert!(m.actual.contains("pending timers"), "{m}");
    let m = tampered(&|s| s.storage.synced.clear());
    assert!(m.actual.contains("storage"), "{m}");
}
