//! Fuzzing: the search finds the kv bug and minimises it; the failure replays from its trace
//! and from its schedule file; the proptest helper finds it too; the correct store survives;
//! a default schedule changes nothing.

mod common;
use common::*;
use proptest::test_runner::{Config, TestRunner};
use retrace_models::KvModel;
use retrace_sim::fuzz::{check_schedule, run_case, schedules, Strategy};
use retrace_sim::{scenario, Schedule, Simulation, TraceSink};

fn kv(name: &str) -> retrace_sim::Scenario<retrace_models::kv::KvOptions> {
    let path = root().join("scenarios").join(name);
    scenario::parse::<KvModel>(name, &read(&path)).unwrap()
}

#[test]
fn retrace_fuzz_finds_minimises_and_saves_the_kv_bug() {
    let dir = scratch_dir("fuzz-kv");
    let o = retrace(&[
        "fuzz",
        "scenarios/kv-fuzz.toml",
        "--cases",
        "200",
        "--jobs",
        "2",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("VIOLATED  case"), "{text}");
    assert!(text.contains("acknowledged write lost"), "{text}");
    let after = text
        .lines()
        .find(|l| l.trim_start().starts_with("after"))
        .expect("a size after minimisation");
    let faults: u64 = after
        .split(", ")
        .find(|p| p.ends_with("injected faults"))
        .and_then(|p| p.split(' ').next()?.parse().ok())
        .unwrap();
    assert!(faults <= 2, "minimised to a crash or two: {after}");
    // The trace replays to the same violation, without divergence.
    let trace = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "trace"))
        .unwrap();
    let o = retrace(&["replay", trace.to_str().unwrap(), "--headless"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("acknowledged write lost"),
        "{}",
        stdout(&o)
    );
    // The schedule file replays the same failure through `retrace run`.
    let schedule = trace.with_extension("schedule.json");
    let o = retrace(&[
        "run",
        "scenarios/kv-fuzz.toml",
        "--schedule",
        schedule.to_str().unwrap(),
        "--no-trace",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("acknowledged write lost"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn the_proptest_helper_finds_the_bug_and_shrinks_it() {
    let s = kv("kv-fuzz.toml");
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&schedules(400), |schedule| {
        check_schedule::<KvModel>(&s, 1, &schedule)
    });
    let err = result.expect_err("ack-before-replicate loses a write under some schedule");
    let text = err.to_string();
    assert!(text.contains("acknowledged write lost"), "{text}");
    assert!(
        text.contains("retrace replay target/retrace/proptest-kv-seed1.trace"),
        "{text}"
    );
}

#[test]
fn the_correct_store_survives_fuzzing_with_every_fault_kind() {
    let mut s = kv("kv-fuzz.toml");
    s.options.bug = None;
    for i in 0..60 {
        for strategy in [Strategy::Random, Strategy::Swarm] {
            let case = run_case::<KvModel>(&s, retrace_sim::fuzz::case_seed(5, i), strategy);
            assert!(
                case.report.violation.is_none(),
                "{:?} case {i}: {}",
                strategy,
                case.report.violation.unwrap().describe()
            );
        }
    }
}

#[test]
fn a_default_schedule_changes_nothing() {
    let s = kv("kv.toml");
    let plain = Simulation::<KvModel>::new(&s, 3, TraceSink::Memory)
        .run()
        .trace
        .unwrap();
    let scheduled = Simulation::<KvModel>::new(&s, 3, TraceSink::Memory)
        .with_schedule(Schedule::default())
        .run();
    assert!(scheduled.trace.unwrap() == plain);
    assert_eq!(scheduled.schedule, Some(Schedule::default()));
}

#[test]
fn bad_fuzz_arguments_are_refused() {
    for (args, msg) in [
        (
            vec!["fuzz", "scenarios/kv-fuzz.toml", "--shard", "3/2"],
            "need 0 <= I < N",
        ),
        (
            vec!["fuzz", "scenarios/kv-fuzz.toml", "--strategy", "lucky"],
            "unknown strategy",
        ),
        (
            vec!["fuzz", "scenarios/kv-fuzz.toml", "--time", "5 fortnights"],
            "--time",
        ),
    ] {
        let o = retrace(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
    }
}
