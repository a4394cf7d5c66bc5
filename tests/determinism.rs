//! The determinism contract: same scenario and seed, byte-identical trace — in one process,
//! across processes, for every shipped scenario (so for every model).

mod common;
use common::*;
use retrace::registry::Registry;
use retrace_sim::TraceSink;

#[test]
fn every_shipped_scenario_is_deterministic_in_process() {
    let registry = Registry::builtin();
    let scenarios = shipped_scenarios();
    let mut models = std::collections::BTreeSet::new();
    for path in &scenarios {
        let file = path.display().to_string();
        let source = read(path);
        let entry = registry.for_scenario(&file, &source).expect("known model");
        models.insert(entry.name());
        for seed in [None, Some(3), Some(12345)] {
            let (report, diff) = entry
                .check_determinism(&file, &source, seed)
                .expect("valid scenario");
            assert!(
                diff.is_none(),
                "{file} seed {seed:?}: {}",
                diff.map(|d| d.to_string()).unwrap_or_default()
            );
            assert!(
                report.trace.as_ref().is_some_and(|t| t.len() > 100),
                "{file}: a trace was kept"
            );
        }
    }
    let all: Vec<&str> = registry.entries().iter().map(|e| e.name()).collect();
    for model in all {
        assert!(
            models.contains(model),
            "model {model} has no scenario in scenarios/"
        );
    }
}

#[test]
fn traces_are_byte_identical_across_processes() {
    let dir = scratch_dir("determinism");
    for scenario in ["scenarios/kv.toml", "scenarios/pingpong.toml"] {
        let a = dir.join("a.trace");
        let b = dir.join("b.trace");
        for out in [&a, &b] {
            let o = retrace(&["run", scenario, "--seed", "99", "-o", out.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        }
        let (ta, tb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert!(ta == tb, "{scenario}: traces of two processes differ");
    }
}

#[test]
fn a_streamed_trace_equals_the_in_memory_one() {
    let registry = Registry::builtin();
    let path = root().join("scenarios/kv.toml");
    let (file, source) = (path.display().to_string(), read(&path));
    let entry = registry.for_scenario(&file, &source).unwrap();
    let memory = entry
        .run(&file, &source, None, TraceSink::Memory)
        .unwrap()
        .trace
        .unwrap();
    let dir = scratch_dir("stream");
    let out = dir.join("kv.trace");
    let f = std::fs::File::create(&out).unwrap();
    let report = entry
        .run(
            &file,
            &source,
            None,
            TraceSink::Stream(Box::new(std::io::BufWriter::new(f))),
        )
        .unwrap();
    assert_eq!(report.trace_bytes as usize, memory.len());
    assert!(std::fs::read(&out).unwrap() == memory);
}

#[test]
fn different_seeds_give_different_runs() {
    let registry = Registry::builtin();
    let path = root().join("scenarios/kv.toml");
    let (file, source) = (path.display().to_string(), read(&path));
    let entry = registry.for_scenario(&file, &source).unwrap();
    let a = entry
        .run(&file, &source, Some(1), TraceSink::Memory)
        .unwrap()
        .trace
        .unwrap();
    let b = entry
        .run(&file, &source, Some(2), TraceSink::Memory)
        .unwrap()
        .trace
        .unwrap();
    assert!(a != b);
    let diff = retrace_sim::first_difference(&a, &b).expect("they differ");
    assert!(diff.to_string().contains("differ"), "{diff}");
}

#[test]
fn check_determinism_flag_reports_identical_runs() {
    let dir = scratch_dir("check-det");
    let out = dir.join("p.trace");
    let o = retrace(&[
        "run",
        "scenarios/pingpong.toml",
        "--check-determinism",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("determinism: two runs gave byte-identical traces"));
    assert!(out.exists());
}
