//! Your own system under retrace's commands: a model defined here, added to the registry.
//!
//! ```sh
//! cargo run --example custom_model -- run examples/gossip.toml
//! cargo run --example custom_model -- models
//! ```
//!
//! `gossip`: every node keeps a counter and, on a timer, tells a random peer its value;
//! nodes adopt larger values. Invariant: no node's value exceeds the largest ever produced.

use retrace::registry::Registry;
use retrace::sim::{invariant, Ctx, Invariant, Model, Node, NodeId, NodeSpec, TimerId, View};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Gossip {
    value: u64,
    produced_max: u64,
}

impl Node for Gossip {
    type Msg = u64;

    fn on_start(&mut self, ctx: &mut Ctx<'_, u64>) {
        ctx.set_timer(Duration::from_millis(10), 0);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, u64>, from: NodeId, value: u64) {
        if value > self.value {
            ctx.annotate(format!("adopting {value} from {from}"));
            self.value = value;
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, u64>, _timer: TimerId, _tag: u64) {
        if ctx.rng().chance(0.1) {
            self.value += 1;
            self.produced_max = self.value;
        }
        let peers = ctx.peers().to_vec();
        if let Some(&peer) = ctx.rng().pick(&peers) {
            ctx.send(peer, self.value);
        }
        ctx.set_timer(Duration::from_millis(10), 0);
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct GossipOptions {
    nodes: u32,
}

struct GossipModel;

impl Model for GossipModel {
    const NAME: &'static str = "gossip";
    const ABOUT: &'static str = "nodes gossip a growing counter (an example of a user model)";
    type Node = Gossip;
    type Options = GossipOptions;

    fn nodes(o: &GossipOptions) -> Vec<NodeSpec> {
        (0..o.nodes.max(2))
            .map(|i| NodeSpec::new(format!("g{i}"), "gossiper"))
            .collect()
    }

    fn build(_: &GossipOptions, _: NodeId) -> Gossip {
        Gossip {
            value: 0,
            produced_max: 0,
        }
    }

    fn invariants(_: &GossipOptions) -> Vec<Box<dyn Invariant<Gossip>>> {
        vec![invariant(
            "values come from somewhere",
            |v: &View<'_, Gossip>| {
                let produced = v
                    .nodes
                    .iter()
                    .flatten()
                    .map(|n| n.produced_max)
                    .max()
                    .unwrap_or(0);
                match v.nodes.iter().flatten().find(|n| n.value > produced) {
                    Some(n) => Err(format!(
                        "a node holds {} but at most {produced} was produced",
                        n.value
                    )
                    .into()),
                    None => Ok(()),
                }
            },
        )]
    }
}

fn main() -> std::process::ExitCode {
    retrace::cli::main_with(Registry::builtin().with::<GossipModel>())
}
