//! `retrace tap`: record the traffic between two processes retrace does not host.

use crate::cli::say;
use crate::record_cli::FsyncArg;
use anyhow::anyhow;
use clap::Args;
use retrace_recorder::tap::{Tap, TapOptions};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(
    after_help = "Example: put a tap in front of Redis, point the application at the tap, and\n\
        record into the run's directory so that `merge` places the traffic in its trace:\n  \
        retrace tap --name redis --listen 127.0.0.1:6380 --upstream 127.0.0.1:6379 --log rec/"
)]
pub struct TapArgs {
    /// Where clients connect (the address the application is pointed at)
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Where the tap connects on (the real server)
    #[arg(long, value_name = "ADDR")]
    upstream: SocketAddr,
    /// Directory for the log (NAME.tap.K.log; a recorded run's directory puts the traffic in
    /// its merge)
    #[arg(long, value_name = "DIR")]
    log: PathBuf,
    /// The black box's name, as traces show it
    #[arg(long, default_value = "tap")]
    name: String,
    /// When the log is forced to disk: always, batch, never
    #[arg(long, value_enum, default_value_t = FsyncArg::Batch)]
    fsync: FsyncArg,
    /// Group-commit interval for --fsync batch, in milliseconds
    #[arg(long, default_value_t = 20)]
    batch_ms: u64,
    /// Connections proxied at once; more are closed as they arrive
    #[arg(long, default_value_t = 256)]
    connections_max: usize,
}

pub fn tap(args: &TapArgs) -> anyhow::Result<u8> {
    let tap = Tap::bind(TapOptions {
        name: args.name.clone(),
        listen: args.listen,
        upstream: args.upstream,
        dir: args.log.clone(),
        fsync: args.fsync.policy(args.batch_ms),
        connections_max: args.connections_max.max(1),
    })
    .map_err(|e| anyhow!("{e}"))?;
    let listen = tap.local_addr().map_err(|e| anyhow!("{e}"))?;
    say!(
        "tapping  {listen} -> {} as `{}`; both directions recorded in {} (stop it with Ctrl-C: the log keeps what it committed)",
        args.upstream,
        args.name,
        tap.log_path.display()
    );
    tap.run().map_err(|e| anyhow!("{e}"))?;
    Ok(crate::exit::OK)
}
