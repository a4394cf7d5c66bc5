//! `retrace provenance`: where a value came from and where it went, across machines.

use crate::exit;
use crate::registry::{Models, Registry};
use crate::replay_cli::{check_event, load};
use anyhow::anyhow;
use clap::Args;
use retrace_replayer::provenance::{lines, Ask};
use retrace_replayer::Steps;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ProvenanceArgs {
    /// The trace
    trace: PathBuf,
    /// The event (trace index) whose step to look at
    event: usize,
    /// Where the value is: a path in the node's state after the step (`.store.k7.value`),
    /// `message…` for the message the step handled (`message.Request.op.Put.value`), or the
    /// value itself (`'"vc8c58fc4"'`, `vc8c58fc4`, `42`) to follow it across the whole run
    path: String,
    /// Print the answer as JSON
    #[arg(long)]
    json: bool,
}

pub fn provenance<L: Models>(registry: &Registry<L>, args: &ProvenanceArgs) -> anyhow::Result<u8> {
    let trace = load(&args.trace)?;
    check_event(&args.trace, &trace, args.event)?;
    let tail = trace.tail.clone();
    let steps = Steps::new(&trace.events);
    let ask = Ask::parse(&steps, args.event, &args.path).map_err(anyhow::Error::msg)?;
    let names: Vec<String> = trace.header.node_names();
    let session = registry
        .session(trace)
        .map_err(|e| anyhow!("{}: {e}", args.trace.display()))?;
    let answer = session
        .provenance(&ask)
        .map_err(|e| anyhow!("{}: {e}", args.trace.display()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&answer).map_err(anyhow::Error::msg)?
        );
    } else {
        for (_, line) in lines(&answer, &names) {
            println!("{line}");
        }
    }
    Ok(exit::after_reading(tail.as_ref(), exit::OK))
}
