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
        models.insert(registry.model_of(&file, &source).expect("known model"));
        for seed in [None, Some(3), Some(12345)] {
            let (report, diff) = registry
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
    for model in registry.names() {
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
    let memory = registry
        .simulate(&file, &source, None, TraceSink::Memory)
        .unwrap()
        .trace
        .unwrap();
    let dir = scratch_dir("stream");
    let out = dir.join("kv.trace");
    let f = std::fs::File::create(&out).unwrap();
    let report = registry
        .simulate(
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
    let a = registry
        .simulate(&file, &source, Some(1), TraceSink::Memory)
        .unwrap()
        .trace
        .unwrap();
    let b = registry
        .simulate(&file, &source, Some(2), TraceSink::Memory)
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

mod leaky {
    //! A model that breaks the contract on purpose: it reads a process-global counter.
    use retrace_sim::{Ctx, Invariant, Model, Node, NodeId, NodeSpec, TimerId};
    use serde::{Deserialize, Serialize};
    use std::sync::atomic::{AtomicU64, Ordering};

    pub static RUNS: AtomicU64 = AtomicU64::new(0);

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Leaky;

    impl Node for Leaky {
        type Msg = u64;
        type Timer = u64;
        fn on_start(&mut self, ctx: &mut Ctx<'_, u64>) {
            ctx.set_timer(std::time::Duration::from_millis(5), 0);
        }
        fn on_message(&mut self, _: &mut Ctx<'_, u64>, _: NodeId, _: u64) {}
        fn on_timer(&mut self, ctx: &mut Ctx<'_, u64>, _: TimerId, _: u64) {
            // Each run reads a counter the previous run advanced: the sends differ.
            if ctx.id() == NodeId(1) {
                let n = RUNS.fetch_add(1, Ordering::SeqCst);
                ctx.send(NodeId(0), n / 3);
            }
            ctx.set_timer(std::time::Duration::from_millis(5), 0);
        }
    }

    pub struct LeakyModel;
    impl Model for LeakyModel {
        const NAME: &'static str = "leaky";
        const ABOUT: &'static str = "nondeterministic on purpose";
        type Node = Leaky;
        type Options = ();
        fn nodes(_: &()) -> Vec<NodeSpec> {
            vec![NodeSpec::new("a", "x"), NodeSpec::new("b", "x")]
        }
        fn build(_: &(), _: NodeId) -> Leaky {
            Leaky
        }
        fn invariants(_: &()) -> Vec<Box<dyn Invariant<Leaky>>> {
            Vec::new()
        }
    }
}

#[test]
fn check_determinism_names_the_first_differing_event() {
    let s = retrace_sim::scenario::parse::<leaky::LeakyModel>(
        "leaky.toml",
        "model = \"leaky\"\ntime_limit = \"100ms\"",
    )
    .unwrap();
    let (_, diff) = retrace_sim::check_determinism::<leaky::LeakyModel>(&s, 1);
    let diff = diff.expect("a leaky model is caught");
    match &diff {
        retrace_sim::TraceDifference::Event {
            index,
            first,
            second,
        } => {
            let (a, b) = (first.as_ref().unwrap(), second.as_ref().unwrap());
            assert_eq!(a.index, *index);
            assert!(
                matches!(a.record, retrace_sim::Record::Send { .. }),
                "{a:?}"
            );
            assert_ne!(a.record, b.record);
        }
        other => panic!("expected an event difference, got {other}"),
    }
    assert!(
        diff.to_string().starts_with("first difference at event"),
        "{diff}"
    );
}
