//! The proptest side of fuzzing: a strategy over schedules, and a check to call from a
//! `proptest!` test.

use crate::model::Model;
use crate::scenario::Scenario;
use crate::schedule::{
    Choice, Moment, MsgKey, Schedule, CLOCK_JUMP_NS, CRASH_DOWN_NS, DELAY_MAX_NS, DELAY_MIN_NS,
};
use crate::sim::{Simulation, TraceSink};
use proptest::prelude::prop_oneof;
use proptest::strategy::Strategy as _;

/// A proptest strategy over schedules of up to `max_len` choices for `scenario`: node faults
/// at moments within its time limit, and drops, duplicates and holds of messages named by
/// link, request (one of the first 64, or background work), kind (a variant of the model's
/// message type) and number. proptest shrinks them towards fewer choices, earlier moments,
/// lower nodes and shorter holds.
pub fn schedules<M: Model>(
    scenario: &Scenario<M::Options>,
    max_len: usize,
) -> impl proptest::strategy::Strategy<Value = Schedule> {
    let nodes = scenario.nodes.len().max(1) as u32;
    let time_ns = scenario.time_limit_ns.max(1);
    let kinds: Vec<&'static str> =
        crate::variant::variant_names::<<M::Node as crate::Node>::Msg>().to_vec();
    let kinds = if kinds.is_empty() { vec![""] } else { kinds };
    let msg = (
        0..nodes,
        0..nodes,
        proptest::option::of(0u64..64),
        proptest::sample::select(kinds),
        0u32..4,
    )
        .prop_map(|(from, to, request, kind, nth)| MsgKey {
            from,
            to,
            request,
            kind: kind.to_string(),
            nth,
        });
    let at = (0..time_ns).prop_map(Moment::at);
    let choice = prop_oneof![
        3 => (0..nodes, at.clone(), proptest::option::of(1_000_000u64..=CRASH_DOWN_NS))
            .prop_map(|(node, at, lasts_ns)| Choice::Crash { node, at, lasts_ns }),
        1 => (0..nodes, at.clone()).prop_map(|(node, at)| Choice::Isolate { node, at, lasts_ns: None }),
        1 => (0..nodes, at, proptest::bool::ANY).prop_map(|(node, at, back)| Choice::ClockJump {
            node,
            at,
            by_ns: if back { -CLOCK_JUMP_NS } else { CLOCK_JUMP_NS },
        }),
        2 => msg.clone().prop_map(|msg| Choice::Drop { msg }),
        2 => msg.clone().prop_map(|msg| Choice::Duplicate { msg }),
        1 => (msg, DELAY_MIN_NS..=DELAY_MAX_NS).prop_map(|(msg, by_ns)| Choice::Delay { msg, by_ns }),
    ];
    proptest::collection::vec(choice, 0..max_len).prop_map(|choices| Schedule {
        choices,
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
