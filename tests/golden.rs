//! Pins, so that changes to the trace are deliberate:
//! - every shipped scenario writes exactly the trace it wrote when the pins were last taken
//!   (a refactor that changes one byte of any trace fails here);
//! - the golden trace of the current format version reads, and its records re-encode to
//!   the same bytes (a format change is a version bump with a new golden file).
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the pins; say why in the commit.

mod common;

use common::{retrace, root, scratch_dir, stderr};
use retrace::sim::codec;
use retrace::sim::trace::{TraceOut, TraceWriter, FORMAT_VERSION};
use retrace::sim::Trace;
use std::collections::BTreeMap;

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

/// The scenarios shipped in `scenarios/`, by file name, in order.
fn scenarios() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("scenarios"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.ends_with(".toml").then_some(name)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn every_shipped_scenario_writes_its_pinned_trace() {
    let dir = scratch_dir("golden-digests");
    let pins_path = root().join("tests/data/trace-digests.txt");
    let mut now = BTreeMap::new();
    for name in scenarios() {
        // The scenario's own seed, and one more.
        for seed in [None, Some("2")] {
            let out = dir.join(format!("{name}-{}.trace", seed.unwrap_or("own")));
            let mut args = vec![
                "run".to_string(),
                format!("scenarios/{name}"),
                "-o".into(),
                out.to_string_lossy().into_owned(),
            ];
            if let Some(s) = seed {
                args.extend(["--seed".into(), s.into()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = retrace(&args);
            assert!(
                matches!(o.status.code(), Some(0 | 1)),
                "{name}: {}",
                stderr(&o)
            );
            let bytes = std::fs::read(&out).unwrap();
            now.insert(
                format!("{name} seed={}", seed.unwrap_or("own")),
                format!("{:016x} {} bytes", codec::digest(&bytes), bytes.len()),
            );
        }
    }
    check_pins(&pins_path, &now, "traces");
}

/// Compares `now` with the pins in `pins_path` (or rewrites them under `UPDATE_GOLDEN`).
fn check_pins(pins_path: &std::path::Path, now: &BTreeMap<String, String>, what: &str) {
    let text: String = now.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    if update() {
        std::fs::write(pins_path, text).unwrap();
        return;
    }
    let pinned = std::fs::read_to_string(pins_path).expect("the pins (UPDATE_GOLDEN=1 makes them)");
    let differ: Vec<String> = pinned
        .lines()
        .zip(text.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("  pinned {a}\n  now    {b}"))
        .collect();
    assert!(
        differ.is_empty() && pinned.lines().count() == text.lines().count(),
        "{what} changed:\n{}",
        differ.join("\n")
    );
}

/// The fuzzer's path through the simulator (a decider choosing order and faults, timed
/// faults, requests left out, minimisation) writes exactly the failures it wrote when the
/// pins were taken: one worker, a fixed master seed, each strategy.
#[test]
fn fuzzing_finds_and_minimises_its_pinned_failures() {
    let dir = scratch_dir("golden-fuzz");
    let mut now = BTreeMap::new();
    // kv-fuzz's swarm case is left out: it minimises much as its random case does, and this
    // test runs in debug builds, where minimising costs fifteen times what it does in release.
    let cases = [
        ("kv-fuzz", "random"),
        ("kv-fuzz", "pct"),
        ("twopc-presumed-commit", "random"),
        ("twopc-presumed-commit", "pct"),
        ("twopc-presumed-commit", "swarm"),
    ];
    for (name, strategy) in cases {
        let out = dir.join(format!("{name}-{strategy}"));
        let o = retrace(&[
            "fuzz",
            &format!("scenarios/{name}.toml"),
            "--cases",
            "300",
            "--jobs",
            "1",
            "--seed",
            "5",
            "--strategy",
            strategy,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
        let mut found: Vec<_> = std::fs::read_dir(&out)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        found.sort();
        let key = format!("{name} {strategy}");
        if found.is_empty() {
            now.insert(key.clone(), "nothing found".to_string());
        }
        for path in found {
            let bytes = std::fs::read(&path).unwrap();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            now.insert(
                format!("{key} {file}"),
                format!("{:016x} {} bytes", codec::digest(&bytes), bytes.len()),
            );
        }
    }
    check_pins(
        &root().join("tests/data/fuzz-digests.txt"),
        &now,
        "fuzz failures",
    );
}

#[test]
fn the_golden_trace_of_this_format_version_reads_and_re_encodes_byte_for_byte() {
    let path = root().join(format!(
        "tests/data/golden/pingpong-v{FORMAT_VERSION}.trace"
    ));
    if update() {
        let o = retrace(&[
            "run",
            "scenarios/pingpong.toml",
            "-o",
            path.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let bytes = std::fs::read(&path).unwrap_or_else(|_| {
        panic!(
            "no golden trace for format version {FORMAT_VERSION}: a format change needs one \
             (UPDATE_GOLDEN=1), and the old version's file kept"
        )
    });
    let trace = Trace::from_bytes(&bytes, "golden").expect("the golden trace reads");
    assert!(trace.tail.is_none(), "{:?}", trace.tail);
    assert!(trace.events.len() > 100);
    let mut out = TraceOut::new(Some(TraceWriter::in_memory(&trace.header)));
    for e in &trace.events {
        let index = out.push(|enc, buf| enc.record(buf, e.time_ns, &e.record));
        assert_eq!(index, e.index);
    }
    let again = out.writer.take().unwrap().into_bytes();
    assert!(
        again == bytes,
        "re-encoding the golden trace changed its bytes"
    );
    // Older versions' golden files are refused with a clear error, not misread.
    for entry in std::fs::read_dir(root().join("tests/data/golden")).unwrap() {
        let p = entry.unwrap().path();
        if p == path {
            continue;
        }
        let err = Trace::load(&p).expect_err("an older format version");
        assert!(err.to_string().contains("format version"), "{err}");
    }
}
