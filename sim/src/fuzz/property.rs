//! The proptest side of fuzzing: a strategy over schedules, and a check to call from a
//! `proptest!` test.

use crate::model::Model;
use crate::scenario::Scenario;
use crate::schedule::Schedule;
use crate::sim::{Simulation, TraceSink};
use proptest::prelude::{prop_oneof, Just};
use proptest::strategy::Strategy as _;

/// A proptest strategy over schedules of up to `max_len` choices. proptest shrinks them
/// towards fewer choices and zero (default order, no fault) values.
pub fn schedules(max_len: usize) -> impl proptest::strategy::Strategy<Value = Schedule> {
    proptest::collection::vec(
        (0u8..4, prop_oneof![9 => Just(0u8), 1 => 1u8..=60]),
        0..max_len,
    )
    .prop_map(|v| Schedule {
        choices: v
            .into_iter()
            .map(|(order, fault)| crate::schedule::Choice { order, fault })
            .collect(),
        ..Schedule::default()
    })
}

/// For `proptest!` tests: runs `scenario` (seed `seed`) under `schedule` and checks its
/// invariants. On a violation it writes the run's trace under `target/retrace/` and fails
/// with the `retrace replay` command that opens it; proptest then shrinks, and the last
/// trace written is the minimal failing run's.
pub fn check_schedule<M: Model>(
    scenario: &Scenario<M::Options>,
    seed: u64,
    schedule: &Schedule,
) -> Result<(), proptest::test_runner::TestCaseError> {
    let report = Simulation::<M>::new(scenario, seed, TraceSink::Memory)
        .with_schedule(schedule.clone())
        .run();
    let Some(v) = report.violation else {
        return Ok(());
    };
    let path = std::path::PathBuf::from("target")
        .join("retrace")
        .join(format!("proptest-{}-seed{seed}.trace", M::NAME));
    let written = report
        .trace
        .as_ref()
        .map(|t| std::fs::create_dir_all("target/retrace").and_then(|_| std::fs::write(&path, t)));
    let how = match written {
        Some(Ok(())) => format!("replay it with: retrace replay {}", path.display()),
        _ => "(its trace could not be written)".to_string(),
    };
    Err(proptest::test_runner::TestCaseError::fail(format!(
        "{}; {how}",
        v.describe()
    )))
}
