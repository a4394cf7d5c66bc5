//! `Ctx::boot` tells a node's first life from a restart, and replay tells node code the same
//! as the run did (what node code does with it is checked like any output).

use retrace_replayer::{CheckpointPolicy, Cursor, Replay};
use retrace_sim::trace::Record;
use retrace_sim::{
    scenario, Boot, Ctx, Invariant, Model, Node, NodeId, NodeSpec, Simulation, TimerId, Trace,
    TraceSink,
};
use serde::{Deserialize, Serialize};

/// Says at every boot which life it is, and keeps it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Lives {
    boots: Vec<Boot>,
}

impl Node for Lives {
    type Msg = u8;
    type Timer = u64;
    fn on_start(&mut self, ctx: &mut Ctx<'_, u8>) {
        let boot = ctx.boot();
        self.boots.push(boot);
        ctx.annotate(format!("{boot:?}"));
    }
    fn on_message(&mut self, _ctx: &mut Ctx<'_, u8>, _from: NodeId, _msg: u8) {}
    fn on_timer(&mut self, _ctx: &mut Ctx<'_, u8>, _timer: TimerId, _tag: u64) {}
}

struct LivesModel;

impl Model for LivesModel {
    const NAME: &'static str = "lives";
    const ABOUT: &'static str = "nodes that say which life they are in";
    type Node = Lives;
    type Options = ();
    fn nodes(_: &()) -> Vec<NodeSpec> {
        vec![NodeSpec::new("a", "lives"), NodeSpec::new("b", "lives")]
    }
    fn build(_: &(), _: NodeId) -> Lives {
        Lives::default()
    }
    fn invariants(_: &()) -> Vec<Box<dyn Invariant<Lives>>> {
        Vec::new()
    }
}

/// b crashes twice and restarts each time; a never does.
fn run() -> Trace {
    let source = "model = \"lives\"\nseed = 3\ntime_limit = \"1s\"\n\
                  [[faults]]\nat = \"100ms\"\ncrash = \"b\"\nrestart_after = \"50ms\"\n\
                  [[faults]]\nat = \"400ms\"\ncrash = \"b\"\nrestart_after = \"50ms\"\n";
    let s = scenario::parse::<LivesModel>("lives.toml", source).unwrap_or_else(|e| panic!("{e}"));
    let report = Simulation::<LivesModel>::new(&s, s.seed, TraceSink::Memory).run();
    assert_eq!((report.stats.crashes, report.stats.restarts), (2, 2));
    Trace::from_bytes(report.trace.as_ref().unwrap(), "lives").unwrap()
}

#[test]
fn on_start_is_told_first_boot_or_restart() {
    let trace = run();
    // Each boot's annotation, by node, in order.
    let mut said: Vec<(u32, String)> = Vec::new();
    let mut node = None;
    for e in &trace.events {
        match &e.record {
            Record::Start { node: n, .. } | Record::Restart { node: n, .. } => node = Some(n.0),
            Record::Annotate { text } => said.push((node.unwrap(), text.clone())),
            _ => {}
        }
    }
    let of = |n: u32| -> Vec<&str> {
        said.iter()
            .filter(|(m, _)| *m == n)
            .map(|(_, t)| t.as_str())
            .collect()
    };
    assert_eq!(of(0), ["First"]);
    assert_eq!(of(1), ["First", "Restart", "Restart"]);
}

#[test]
fn replay_tells_node_code_the_same_boot() {
    let mut cursor = Cursor::new(
        Replay::<LivesModel>::new(run()).unwrap(),
        CheckpointPolicy::default(),
    );
    cursor.run_to_end();
    assert!(cursor.divergence().is_none(), "{:?}", cursor.divergence());
    // The restarted node's state is its last life's (a restart rebuilds it).
    let b = cursor.nodes()[1].as_ref().expect("b is up at the end");
    assert_eq!(b.boots, [Boot::Restart]);
}
