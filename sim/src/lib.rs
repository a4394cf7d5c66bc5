//! # retrace-sim
//!
//! The deterministic core of retrace: the [`Node`] API a user writes a system against, the
//! simulator that runs a cluster of nodes in virtual time under a network and fault model,
//! the scenario format, and the trace format every part of retrace reads.
//!
//! The simulator does no I/O of its own: a trace goes to whatever [`TraceSink`] the caller
//! hands in, and scenarios arrive as text.
//!
//! ```
//! use retrace_sim::{Model, NodeSpec, NodeId, Node, Ctx, TimerId, Invariant, invariant,
//!                   scenario, Simulation, TraceSink, View};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Debug, Serialize, Deserialize)]
//! struct Counter { seen: u64 }
//!
//! impl Node for Counter {
//!     type Msg = u64;
//!     type Timer = u64;
//!     fn on_start(&mut self, ctx: &mut Ctx<'_, u64>) {
//!         if ctx.id() == NodeId(0) { ctx.send(NodeId(1), 1) }
//!     }
//!     fn on_message(&mut self, ctx: &mut Ctx<'_, u64>, from: NodeId, n: u64) {
//!         self.seen = n;
//!         if n < 10 { ctx.send(from, n + 1) }
//!     }
//!     fn on_timer(&mut self, _: &mut Ctx<'_, u64>, _: TimerId, _: u64) {}
//! }
//!
//! struct Count;
//! impl Model for Count {
//!     const NAME: &'static str = "count";
//!     const ABOUT: &'static str = "two nodes count to ten";
//!     type Node = Counter;
//!     type Options = ();
//!     fn nodes(_: &()) -> Vec<NodeSpec> {
//!         vec![NodeSpec::new("a", "counter"), NodeSpec::new("b", "counter")]
//!     }
//!     fn build(_: &(), _: NodeId) -> Counter { Counter { seen: 0 } }
//!     fn invariants(_: &()) -> Vec<Box<dyn Invariant<Counter>>> {
//!         vec![invariant("at most ten", |v: &View<'_, Counter>| match v.nodes.iter().flatten().any(|n| n.seen > 10) {
//!             true => Err("counted past ten".into()),
//!             false => Ok(()),
//!         })]
//!     }
//! }
//!
//! let scenario = scenario::parse::<Count>("count.toml", "model = \"count\"\nseed = 1").unwrap();
//! let report = Simulation::<Count>::new(&scenario, scenario.seed, TraceSink::Memory).run();
//! assert!(report.violation.is_none());
//! assert_eq!(report.stats.delivered, 10);
//! ```

pub mod check;
pub mod client;
pub mod codec;
mod determinism;
pub mod fork;
pub mod fuzz;
pub mod history;
pub mod http;
mod ids;
pub mod limits;
pub mod linearizability;
pub mod logs;
mod model;
mod node;
mod queue;
pub mod rng;
pub mod scenario;
pub mod schedule;
pub mod service;
mod sim;
pub mod snapshot;
mod storage;
pub mod tag;
pub mod trace;
pub mod variant;
pub mod what_if;
mod world;

pub use determinism::{check_determinism, first_difference, TraceDifference};
pub use fork::{ForkCut, ForkError, ForkFuture, ForkLedger, ForkPoint};
pub use ids::{duration_ns, format_ns, NodeId, RequestId, Time, TimerId};
pub use model::{invariant, Broken, Invariant, Model, NodeSpec, OptionError, View};
pub use node::{Boot, Ctx, Env, Message, Node};
pub use rng::{SimRng, StepRng, StepRngState};
pub use scenario::{Scenario, ScenarioError};
pub use schedule::{Choice, Decider, Moment, MsgKey, Schedule};
pub use service::{ConnId, Service, ServiceEvent, ServiceOp};
pub use sim::{sim_header, RunReport, Simulation, Stats, TraceSink, Violation, MAX_REQUEST_IDS};
pub use snapshot::NodeSnapshot;
pub use storage::{Storage, StorageImage};
pub use tag::Tag;
pub use trace::{Event, Outcome, Record, Trace};
pub use what_if::Intervention;
pub use world::SwarmKinds;
