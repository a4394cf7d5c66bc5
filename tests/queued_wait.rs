//! Time an input waits for its busy node (`Queued` records) belongs to that input's step
//! only, through crashes of the busy node.

use retrace_sim::trace::Record;
use retrace_sim::{
    scenario, Ctx, Invariant, Model, Node, NodeId, NodeSpec, Simulation, TimerId, Trace, TraceSink,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Node 0 sends three messages at start; node 1 is busy 50 ms with each.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Sleeper;

impl Node for Sleeper {
    type Msg = u8;
    type Timer = u64;
    fn on_start(&mut self, ctx: &mut Ctx<'_, u8>) {
        if ctx.id() == NodeId(0) {
            for i in 0..3 {
                ctx.send(NodeId(1), i);
            }
        }
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_, u8>, _from: NodeId, _msg: u8) {
        ctx.busy(Duration::from_millis(50));
    }
    fn on_timer(&mut self, _ctx: &mut Ctx<'_, u8>, _timer: TimerId, _tag: u64) {}
}

struct SleeperModel;

impl Model for SleeperModel {
    const NAME: &'static str = "sleeper";
    const ABOUT: &'static str = "a node busy with every message";
    type Node = Sleeper;
    type Options = ();
    fn nodes(_: &()) -> Vec<NodeSpec> {
        vec![NodeSpec::new("a", "sender"), NodeSpec::new("b", "sleeper")]
    }
    fn build(_: &(), _: NodeId) -> Sleeper {
        Sleeper
    }
    fn invariants(_: &()) -> Vec<Box<dyn Invariant<Sleeper>>> {
        Vec::new()
    }
}

#[test]
fn a_deferred_delivery_dropped_by_a_crash_leaves_no_wait_to_the_restart() {
    // b takes the first message at 1 ms and is busy until 51 ms; the other two wait for it.
    // b crashes at 20 ms: at 51 ms they find it down and are dropped, having waited 50 ms
    // for a step that never ran. b's restart at 120 ms waited for nothing.
    let source =
        "model = \"sleeper\"\nseed = 1\ntime_limit = \"300ms\"\n[network]\nlatency = \"1ms\"\n\
                  [[faults]]\nat = \"20ms\"\ncrash = \"b\"\nrestart_after = \"100ms\"\n";
    let s =
        scenario::parse::<SleeperModel>("sleeper.toml", source).unwrap_or_else(|e| panic!("{e}"));
    let report = Simulation::<SleeperModel>::new(&s, s.seed, TraceSink::Memory).run();
    let trace = Trace::from_bytes(report.trace.as_ref().unwrap(), "sleeper").unwrap();
    assert_eq!((report.stats.crashes, report.stats.restarts), (1, 1));
    assert_eq!(
        report.stats.dropped, 2,
        "the two waiting messages found b down"
    );
    let mut input = None;
    for e in &trace.events {
        match &e.record {
            Record::Queued { .. } => assert!(
                matches!(
                    input,
                    Some(Record::Deliver { .. } | Record::Timer { .. } | Record::External { .. })
                ),
                "a wait recorded in the step of {input:?}"
            ),
            r if r.input_node().is_some() => input = Some(r.clone()),
            _ => {}
        }
    }
}
