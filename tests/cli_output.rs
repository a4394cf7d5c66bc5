//! Snapshots of what users read: help text and run summaries
//! (refresh with `UPDATE_EXPECT=1 cargo test --test cli_output`).

mod common;
use common::*;
use expect_test::expect_file;
use retrace::registry::Registry;
use retrace::summary::run_summary;
use retrace_sim::TraceSink;

#[test]
fn help_texts() {
    for (args, file) in [
        (&["--help"][..], "data/help/retrace.txt"),
        (&["run", "--help"][..], "data/help/run.txt"),
        (&["show", "--help"][..], "data/help/show.txt"),
        (&["bench", "--help"][..], "data/help/bench.txt"),
    ] {
        let o = retrace(args);
        assert_eq!(o.status.code(), Some(0));
        expect_file![file].assert_eq(&stdout(&o));
    }
}

#[test]
fn run_summaries() {
    let registry = Registry::builtin();
    for (scenario, file) in [
        ("scenarios/pingpong.toml", "data/summary/pingpong.txt"),
        (
            "scenarios/kv-ack-before-replicate.toml",
            "data/summary/kv-ack-before-replicate.txt",
        ),
    ] {
        let source = read(&root().join(scenario));
        let info = registry.scenario_info(scenario, &source, None).unwrap();
        let report = registry
            .simulate(scenario, &source, None, TraceSink::Memory)
            .unwrap();
        let text = run_summary(
            &info,
            &report,
            Some(std::path::Path::new("out.trace")),
            None,
        );
        expect_file![file].assert_eq(&text);
    }
}

#[test]
fn show_prints_one_line_per_event() {
    let dir = scratch_dir("show");
    let path = dir.join("p.trace");
    let o = retrace(&[
        "run",
        "scenarios/pingpong.toml",
        "-o",
        path.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let o = retrace(&["show", path.to_str().unwrap(), "--limit", "12"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    expect_file!["data/show-pingpong.txt"].assert_eq(&stdout(&o));
}

#[test]
fn models_lists_the_registry() {
    let o = retrace(&["models"]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(text.starts_with("kv "), "{text}");
    assert!(text.contains("\npingpong "), "{text}");
}
