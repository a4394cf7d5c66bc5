//! `examples/custom_model.rs` is the example the README points to first: it must keep
//! running, and its bug must keep being found (by the linearizability check alone).

#[allow(dead_code)]
#[path = "../examples/custom_model.rs"]
mod custom_model;

mod common;
use common::*;
use custom_model::RegisterModel;
use retrace::sim::{scenario, Simulation, TraceSink};

fn run(file: &str) -> retrace::sim::RunReport {
    let text = read(&root().join("examples").join(file));
    let s = scenario::parse::<RegisterModel>(file, &text).unwrap();
    Simulation::<RegisterModel>::new(&s, s.seed, TraceSink::Discard).run()
}

#[test]
fn the_register_answers_after_commit_and_recovers_after_a_restart() {
    let r = run("register.toml");
    assert!(r.violation.is_none(), "{:?}", r.violation);
    assert_eq!(r.stats.restarts, 1, "the leader was killed and came back");
    // Puts are answered by `respond_to` once committed, gets at once: nearly all answered.
    assert!(
        r.stats.responses * 100 >= r.stats.requests * 95,
        "{:?}",
        r.stats
    );
}

#[test]
fn forgetting_the_commit_point_is_a_stale_read_after_the_restart() {
    let r = run("register-forget-commit.toml");
    let v = r.violation.expect("the stale read is found");
    assert_eq!(v.invariant, "clients see one register");
    assert!(v.message.contains("cannot be ordered"), "{}", v.message);
}
