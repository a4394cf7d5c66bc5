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

/// `retrace fuzz SCENARIO ARGS --out DIR`.
fn fuzz_into(dir: &std::path::Path, scenario: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["fuzz", scenario];
    all.extend_from_slice(args);
    all.extend(["--out", dir.to_str().unwrap()]);
    retrace(&all)
}

/// The failure trace `retrace fuzz` wrote into `dir`.
fn written_trace(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "trace"))
        .expect("a trace written")
}

#[test]
fn retrace_fuzz_finds_minimises_and_saves_the_kv_bug() {
    let dir = scratch_dir("fuzz-kv");
    let o = fuzz_into(
        &dir,
        "scenarios/kv-fuzz.toml",
        &["--cases", "200", "--jobs", "2"],
    );
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("VIOLATED  case"), "{text}");
    assert!(text.contains("acknowledged write lost"), "{text}");
    // The default rotates strategies case by case (the raft bug scenarios were not found
    // by the old default, random, where swarm found them); each failure names its own.
    assert!(
        text.contains("strategy rotate (random, swarm, pct)"),
        "{text}"
    );
    let sf: serde_json::Value =
        serde_json::from_str(&read(&written_trace(&dir).with_extension("schedule.json"))).unwrap();
    assert!(
        matches!(sf["strategy"].as_str(), Some("random" | "swarm" | "pct")),
        "{sf}"
    );
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
    let trace = written_trace(&dir);
    let o = retrace(&["replay", trace.to_str().unwrap(), "--headless"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the violation, replayed: {}",
        stdout(&o)
    );
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
    let result = runner.run(&schedules::<KvModel>(&s, 8), |schedule| {
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
fn retrace_fuzz_finds_the_twopc_bug_and_the_proptest_helper_too() {
    let dir = scratch_dir("fuzz-twopc");
    let o = fuzz_into(
        &dir,
        "scenarios/twopc-presumed-commit.toml",
        &["--cases", "500"],
    );
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("invariant `atomicity` violated"),
        "{}",
        stdout(&o)
    );
    let s = load::<retrace_models::TwoPcModel>("twopc-presumed-commit.toml");
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(
        &schedules::<retrace_models::TwoPcModel>(&s, 8),
        |schedule| check_schedule::<retrace_models::TwoPcModel>(&s, 1, &schedule),
    );
    assert!(result
        .expect_err("presumed-commit is found")
        .to_string()
        .contains("atomicity"));
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
            "invalid value 'lucky' for '--strategy <STRATEGY>'",
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

/// Runs cases `0..max` of `scenario` with `strategy` from master seed 1; the first failure.
fn first_failure<M: retrace_sim::Model>(
    scenario: &retrace_sim::Scenario<M::Options>,
    strategy: Strategy,
    master: u64,
    max: u64,
) -> Option<(u64, retrace_sim::fuzz::Case)> {
    (0..max)
        .map(|i| {
            (
                i,
                run_case::<M>(scenario, retrace_sim::fuzz::case_seed(master, i), strategy),
            )
        })
        .find(|(_, c)| c.report.violation.is_some())
}

fn load<M: retrace_sim::Model>(name: &str) -> retrace_sim::Scenario<M::Options> {
    let path = root().join("scenarios").join(name);
    scenario::parse::<M>(name, &read(&path)).unwrap()
}

#[test]
fn every_known_raft_and_twopc_bug_is_found_within_bounded_runs() {
    use retrace_models::{RaftModel, TwoPcModel};
    // (scenario, strategy, master seed, runs at most, what the violation says). The bounds
    // are a little above where each search finds its bug from that seed (the medians over
    // ten master seeds are in `retrace bench fuzz`).
    let cases: [(&str, Strategy, u64, u64, &str); 3] = [
        (
            "raft-double-vote.toml",
            Strategy::Random,
            7,
            1_000,
            "election safety",
        ),
        (
            "raft-forget-vote.toml",
            Strategy::Swarm,
            4,
            1_500,
            "election safety",
        ),
        ("raft-commit-old-term.toml", Strategy::Random, 2, 9_500, ""),
    ];
    for (name, strategy, master, max, what) in cases {
        let s = load::<RaftModel>(name);
        let (i, case) = first_failure::<RaftModel>(&s, strategy, master, max)
            .unwrap_or_else(|| panic!("{name}: not found"));
        let v = case.report.violation.unwrap();
        assert!(v.message.contains(what), "{name} (case {i}): {}", v.message);
        // The failure replays from its schedule.
        let again = retrace_sim::fuzz::replay_case::<RaftModel>(
            &s,
            case.seed,
            strategy,
            &case.schedule,
            TraceSink::Discard,
        );
        assert_eq!(
            again.violation.map(|v| v.message),
            Some(v.message),
            "{name}"
        );
    }
    let s = load::<TwoPcModel>("twopc-presumed-commit.toml");
    let (_, case) =
        first_failure::<TwoPcModel>(&s, Strategy::Random, 1, 2_000).expect("presumed-commit found");
    assert!(case
        .report
        .violation
        .unwrap()
        .message
        .contains("committed at node"));
}

#[test]
fn correct_raft_and_twopc_survive_every_fault_kind() {
    use retrace_models::{RaftModel, TwoPcModel};
    let raft = load::<RaftModel>("raft.toml");
    let twopc = load::<TwoPcModel>("twopc.toml");
    for i in 0..300 {
        for strategy in [Strategy::Random, Strategy::Swarm, Strategy::Pct] {
            let seed = retrace_sim::fuzz::case_seed(9, i);
            let r = run_case::<RaftModel>(&raft, seed, strategy).report;
            assert!(
                r.violation.is_none(),
                "raft {strategy:?} case {i}: {}",
                r.violation.unwrap().describe()
            );
            if i < 100 {
                let r = run_case::<TwoPcModel>(&twopc, seed, strategy).report;
                assert!(
                    r.violation.is_none(),
                    "twopc {strategy:?} case {i}: {}",
                    r.violation.unwrap().describe()
                );
            }
        }
    }
}

/// Raft bugs through the proptest helper, as a user's `proptest!` test would find them:
/// (scenario, schedule length, cases at most, what the violation says). The runner is
/// seeded, so each search is repeatable. Shrinking is bounded: every failing case writes its
/// trace. (commit-old-term, which needs a leader to crash after replicating to a minority and
/// a later leader to commit over it, is not found by random schedules in 6,000 cases; the
/// fuzzer's deciders find it, see `every_known_raft_and_twopc_bug_is_found_within_bounded_runs`.)
#[test]
fn the_proptest_helper_finds_raft_double_vote_and_forget_vote() {
    use retrace_models::RaftModel;
    for (name, max_len, cases, what) in [
        // Two leaders of a term may show first as a leader lacking the other's entries.
        ("raft-double-vote.toml", 32, 4_000, "raft safety"),
        ("raft-forget-vote.toml", 32, 5_000, "election safety"),
    ] {
        let s = load::<RaftModel>(name);
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases,
                failure_persistence: None,
                max_shrink_iters: 200,
                ..Config::default()
            },
            proptest::test_runner::TestRng::deterministic_rng(
                proptest::test_runner::RngAlgorithm::ChaCha,
            ),
        );
        let strategy = (0u64..1_000_000, schedules::<RaftModel>(&s, max_len));
        let result = runner.run(&strategy, |(seed, schedule)| {
            check_schedule::<RaftModel>(&s, seed, &schedule)
        });
        let text = match result {
            Err(e) => e.to_string(),
            Ok(()) => panic!("{name}: not found in {cases} cases"),
        };
        assert!(text.contains(what), "{name}: {text}");
        assert!(
            text.contains("replay it with: retrace replay target/retrace/proptest-raft-seed"),
            "{name}: {text}"
        );
    }
}

/// Each raft bug through `retrace fuzz`, from a master seed where it turns up early (the
/// searches' medians are in `retrace bench fuzz`); the saved schedule replays the failure.
#[test]
fn retrace_fuzz_finds_every_raft_bug_and_its_schedule_replays_it() {
    for (scenario, strategy, master, cases, what) in [
        (
            "scenarios/raft-double-vote.toml",
            "random",
            "7",
            "1000",
            "election safety",
        ),
        (
            "scenarios/raft-forget-vote.toml",
            "swarm",
            "4",
            "1500",
            "election safety",
        ),
        (
            "scenarios/raft-commit-old-term.toml",
            "random",
            "2",
            "9500",
            "leader completeness",
        ),
    ] {
        let dir = scratch_dir("fuzz-raft");
        let o = fuzz_into(
            &dir,
            scenario,
            &[
                "--strategy",
                strategy,
                "--seed",
                master,
                "--cases",
                cases,
                "--jobs",
                "2",
                "--no-minimize",
            ],
        );
        assert_eq!(
            o.status.code(),
            Some(1),
            "{scenario}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(stdout(&o).contains(what), "{scenario}: {}", stdout(&o));
        let schedule = written_trace(&dir).with_extension("schedule.json");
        let o = retrace(&[
            "run",
            scenario,
            "--schedule",
            schedule.to_str().unwrap(),
            "--no-trace",
        ]);
        assert_eq!(o.status.code(), Some(1), "{scenario}: {}", stdout(&o));
        assert!(
            stdout(&o).contains("raft safety"),
            "{scenario}: {}",
            stdout(&o)
        );
    }
}

/// The smallest failing runs we could construct by hand, which the minimiser's results are
/// measured against (`retrace bench fuzz` prints the ratio).
#[test]
fn hand_built_minimal_failures_fail() {
    for (file, steps_at_most, what) in [
        (
            "tests/data/kv-hand-built.toml",
            21,
            "acknowledged write lost",
        ),
        ("tests/data/twopc-hand-built.toml", 11, "atomicity"),
        (
            "tests/data/kv-fuzz-hand-built.toml",
            16,
            "acknowledged write lost",
        ),
        ("tests/data/twopc-fuzz-hand-built.toml", 9, "atomicity"),
        (
            "tests/data/raft-double-vote-hand-built.toml",
            15,
            "election safety",
        ),
        (
            "tests/data/raft-forget-vote-hand-built.toml",
            24,
            "election safety",
        ),
        (
            "tests/data/raft-commit-old-term-hand-built.toml",
            168,
            "leader completeness",
        ),
    ] {
        let o = retrace(&["run", file, "--no-trace"]);
        assert_eq!(o.status.code(), Some(1), "{file}: {}", stdout(&o));
        let text = stdout(&o);
        assert!(text.contains(what), "{file}: {text}");
        let steps: u64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("events    ")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap();
        assert!(steps <= steps_at_most, "{file}: {steps} steps");
    }
}

/// Minimised failures stay within twice the hand-built runs above, for two searches that
/// once minimised badly: kv master seed 10 found the lost write through an isolated primary
/// (152 steps, where a crash after the acknowledgement takes 16), and twopc master seed 10
/// kept ten earlier transactions because dropping them moved the participant's "no" vote
/// (106 steps; a node's draws now depend on the request, not on what came before). Each
/// minimised trace replays to the same violation.
#[test]
fn an_isolated_primary_and_a_moved_no_vote_minimise_within_twice_the_hand_built_runs() {
    for (scenario, steps_at_most, what) in [
        ("scenarios/kv-fuzz.toml", 2 * 16, "acknowledged write lost"),
        ("scenarios/twopc-presumed-commit.toml", 2 * 9, "atomicity"),
    ] {
        let dir = scratch_dir("fuzz-minimal");
        let o = fuzz_into(&dir, scenario, &["--seed", "10", "--jobs", "1"]);
        assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
        let text = stdout(&o);
        let events: u64 = text
            .lines()
            .find_map(|l| {
                l.trim_start()
                    .strip_prefix("after")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{scenario}: no size after minimisation: {text}"));
        assert!(events <= steps_at_most, "{scenario}: {text}");
        let trace = written_trace(&dir);
        let o = retrace(&["replay", trace.to_str().unwrap(), "--headless"]);
        assert_eq!(o.status.code(), Some(1), "{scenario}: {}", stdout(&o));
        assert!(stdout(&o).contains(what), "{scenario}: {}", stdout(&o));
    }
}

/// `run --schedule S` wrote to the plain run's trace path (`…-seed1.trace`), silently
/// replacing it.
#[test]
fn a_schedule_run_writes_its_own_trace_and_leaves_the_plain_runs_alone() {
    let dir = scratch_dir("schedule-own-trace");
    let plain = root().join("target/retrace/pingpong-seed4242.trace");
    let o = retrace(&["run", "scenarios/pingpong.toml", "--seed", "4242"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let before = std::fs::read(&plain).unwrap();
    let schedule = dir.join("replay-me-4242.schedule.json");
    let sf = serde_json::json!({
        "format": 2, "model": "pingpong", "scenario": "scenarios/pingpong.toml", "seed": 4242,
        "strategy": "random", "invariant": "",
        "schedule": { "choices": [{"choice": "crash", "node": 1, "at": {"at_ns": 5000000}}] },
    });
    std::fs::write(&schedule, sf.to_string()).unwrap();
    let o = retrace(&[
        "run",
        "scenarios/pingpong.toml",
        "--schedule",
        schedule.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let own = root().join("target/retrace/pingpong-from-replay-me-4242.schedule.trace");
    assert!(own.exists(), "{}", stdout(&o));
    assert_eq!(
        std::fs::read(&plain).unwrap(),
        before,
        "the plain run's trace is untouched"
    );
}
