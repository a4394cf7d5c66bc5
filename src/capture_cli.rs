//! `retrace mark` (keep this moment on a running node) and `retrace capture` (the window
//! around a moment, from the logs of a long recording, as a trace).

use crate::cli::{say, tell};
use crate::exit;
use crate::summary::{bytes, group};
use anyhow::anyhow;
use clap::Args;
use retrace_recorder::capture::{
    capture as capture_window, parse_wall_time, Around, CaptureOptions,
};
use retrace_recorder::policy::{parse_duration, ShowDuration};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct MarkArgs {
    /// A running node's client address
    addr: SocketAddr,
    /// Why this moment matters (kept with the mark; `capture --around` finds it by this)
    reason: String,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  retrace mark 127.0.0.1:7001 \"p99 alarm\"\n  \
        retrace capture rec/ --around \"p99 alarm\" -o incident.trace\n  \
        retrace capture host-a/ host-b/ --around 2026-12-01T16:03:05Z --before 2m --after 10s -o incident.trace"
)]
pub struct CaptureArgs {
    /// Directories holding the nodes' logs (a recorded run, or logs copied from several hosts)
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// The moment: a mark's reason (the latest mark with it), or a UTC time
    /// (2026-12-01T16:03:05Z, or ns since the Unix epoch)
    #[arg(long, value_name = "MARK|TIME")]
    around: String,
    /// How much before the moment to keep
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    before: Duration,
    /// How much after the moment to keep
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    after: Duration,
    /// The trace to write
    #[arg(long, short = 'o', value_name = "TRACE")]
    out: PathBuf,
}

pub fn mark(args: &MarkArgs) -> anyhow::Result<u8> {
    let request = serde_json::json!({ "retrace_mark": args.reason }).to_string();
    let mut c = retrace_recorder::client::Client::connect(args.addr, Duration::from_secs(2))
        .map_err(|e| anyhow!("{}: {e}", args.addr))?;
    let reply = c
        .request(request.as_bytes())
        .map_err(|e| anyhow!("{}: {e}", args.addr))?;
    match reply.get("marked") {
        Some(m) => {
            say!(
                "marked    {} (life {}) at {} ns: {}",
                m["node"].as_str().unwrap_or("?"),
                m["incarnation"],
                m["wall_ns"],
                m["reason"].as_str().unwrap_or("")
            );
            Ok(exit::OK)
        }
        None => Err(anyhow!("{}: {reply}", args.addr)),
    }
}

pub fn capture(args: &CaptureArgs) -> anyhow::Result<u8> {
    let around = match parse_wall_time(&args.around) {
        Some(t) => Around::Time(t),
        None => Around::Mark(args.around.clone()),
    };
    let opts = CaptureOptions {
        around,
        before: args.before,
        after: args.after,
    };
    let started = std::time::Instant::now();
    let report = capture_window(&args.dirs, &opts, &args.out)?;
    for p in &report.merge.problems {
        tell!("warning: {p}");
    }
    if let Some(m) = &report.mark {
        say!(
            "mark      `{}` on {} (life {}) at {} ns",
            m.reason,
            m.node,
            m.incarnation,
            m.wall_ns
        );
    }
    say!(
        "window    {} before to {} after: {} node lives, {} segments read ({} skipped by their headers)",
        ShowDuration(args.before),
        ShowDuration(args.after),
        report.lives,
        report.segments_read,
        report.segments_skipped
    );
    say!(
        "captured  {}: {} steps, {} records, {} in {:.2}s",
        args.out.display(),
        group(report.merge.steps),
        group(report.merge.records),
        bytes(report.merge.bytes),
        started.elapsed().as_secs_f64()
    );
    if report.merge.black_box_messages > 0 {
        say!(
            "          {} messages were sent before the window (delivered in it without a causal link)",
            group(report.merge.black_box_messages)
        );
    }
    Ok(exit::OK)
}
