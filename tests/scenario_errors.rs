//! Bad scenario files get an error naming the file, line and field, exit code 2, no panic.
//! Data-driven: each `data/bad-scenarios/NAME.toml` has its expected stderr beside it in
//! `NAME.stderr` (refresh with `UPDATE_EXPECT=1 cargo test --test scenario_errors`).

mod common;
use common::*;

#[test]
fn bad_scenarios_get_located_errors_and_exit_2() {
    let dir = root().join("tests/data/bad-scenarios");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10);
    for case in cases {
        let rel = case
            .strip_prefix(root())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let o = retrace(&["run", &rel, "--no-trace"]);
        assert_eq!(o.status.code(), Some(2), "{rel}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{rel}: nothing on stdout");
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{rel}: {err}");
        assert!(
            err.starts_with(&format!("error: {rel}")),
            "{rel}: the error names the file: {err}"
        );
        let expected = case.with_extension("stderr");
        let name = expected.file_name().unwrap().to_str().unwrap();
        expect_test::expect_file![format!("data/bad-scenarios/{name}")].assert_eq(&err);
    }
}

#[test]
fn a_missing_scenario_file_is_named() {
    let o = retrace(&["run", "scenarios/no-such-file.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("error: scenarios/no-such-file.toml: cannot read scenario:"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_unwritable_trace_path_is_bad_input_before_anything_runs() {
    let dir = scratch_dir("unwritable");
    let blocker = dir.join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let out = blocker.join("sub/x.trace");
    let o = retrace(&[
        "run",
        "scenarios/pingpong.toml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot create"), "{}", stderr(&o));
}
