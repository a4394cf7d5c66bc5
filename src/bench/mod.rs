//! `retrace bench`: simulator throughput and trace size, measured, never assumed.

mod capture;
mod export;
mod fork;
mod fuzz;
mod large;
mod lin;
mod record;
pub(crate) mod replay;
mod tui;

use crate::summary::{bytes, group, rate};
use anyhow::anyhow;
use clap::Args;
use retrace_models::{KvModel, PingPongModel};
use retrace_sim::trace::{Record, TraceReader};
use retrace_sim::{scenario, Model, RunReport, Simulation, TraceSink};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to measure.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchTarget {
    /// The simulator: deliveries per second and trace size (pingpong, kv)
    Sim,
    /// The recorder: a real kv cluster, recording on and off in turn
    Record,
    /// The replayer: re-execution, jumps, causality and profile queries
    Replay,
    /// The fuzzer: time and runs to each known bug, minimised sizes, runs per second
    Fuzz,
    /// The TUI: opening a long trace, keypress-to-frame time per motion
    Tui,
    /// The exports: each format's speed and peak memory on long traces
    Export,
    /// The linearizability checker: a 10,000-operation kv history, and its cost inside runs
    Lin,
    /// Capture: windows of growing length cut out of a recording, time against window
    Capture,
    /// A trace larger than memory: indexing it, opening it, random reads, `why`
    Large,
    /// Forks: at the end of a long trace; `inevitable` on the kv demo and raft's double vote
    Fork,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to measure
    #[arg(value_enum, default_value_t = BenchTarget::Sim)]
    pub(crate) target: BenchTarget,
    /// (record) Rounds, alternating recording off, on, on with plaintext peer links, the
    /// flight recorder, HTTP clients with recording off and on, and webcache with a real
    /// redis-server (a Redis call per request) with recording off and on
    #[arg(long, default_value_t = 16)]
    pub(crate) rounds: u32,
    /// (record) Seconds per round
    #[arg(long, default_value_t = 4)]
    pub(crate) round_seconds: u64,
    /// (record) Closed-loop clients
    #[arg(long, default_value_t = 8)]
    pub(crate) workers: usize,
    /// (record) Log durability policy
    #[arg(long, value_enum, default_value_t = crate::record_cli::FsyncArg::Batch)]
    pub(crate) fsync: crate::record_cli::FsyncArg,
    /// (record) Group-commit interval for --fsync batch, in milliseconds
    #[arg(long, default_value_t = 20)]
    pub(crate) batch_ms: u64,
    /// (fuzz) Only the scenarios whose file name contains this
    #[arg(long, value_name = "TEXT")]
    pub(crate) only: Option<String>,
    /// (fuzz) Master seeds per known bug
    #[arg(long, default_value_t = 10)]
    pub(crate) seeds: u64,
    /// (replay, tui, export, fork) Records of the trace re-executed and queried
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) replay_events: u64,
    /// (replay) Records of the trace to jump around in
    #[arg(long, default_value_t = 10_000_000)]
    pub(crate) jump_events: u64,
    /// (replay) Random jumps to time; (large) random record reads
    #[arg(long, default_value_t = 200)]
    pub(crate) jumps: usize,
    /// (sim) Ping-pong deliveries to simulate per measurement
    #[arg(long, default_value_t = 5_000_000)]
    pub(crate) deliveries: u64,
    /// (sim) Virtual seconds of the kv run
    #[arg(long, default_value_t = 20)]
    pub(crate) kv_seconds: u64,
    /// (sim) Repetitions of each measurement; the best is reported
    #[arg(long, default_value_t = 3)]
    pub(crate) repeat: u32,
    /// (large) Records of the trace opened through its index
    #[arg(long, default_value_t = 100_000_000)]
    pub(crate) large_records: u64,
    /// (large) Keep the trace and its index afterwards
    #[arg(long)]
    pub(crate) keep: bool,
    /// Where the traces go
    #[arg(long, default_value = "target/retrace/bench")]
    pub(crate) dir: PathBuf,
}

/// Ping-pong with one message in flight over a fixed 1 ms link: each delivery takes 1 ms of
/// virtual time, so the time limit sets the number of deliveries.
fn pingpong_scenario(deliveries: u64) -> String {
    format!(
        "model = \"pingpong\"\nseed = 1\ntime_limit = \"{}ms\"\nmax_events = {}\n[network]\nlatency = \"1ms\"\n",
        deliveries,
        deliveries * 2 + 100
    )
}

fn kv_scenario(seconds: u64) -> String {
    format!(
        "model = \"kv\"\nseed = 1\ntime_limit = \"{seconds}s\"\n[model_options]\nreplicas = 5\nclients = 10\n\
         [network]\nlatency = \"1ms..5ms\"\n[workload]\nrate = \"5000/s\"\n"
    )
}

struct Measured {
    report: RunReport,
    wall: Duration,
}

fn measure<M: Model>(source: &str, repeat: u32, trace: Option<&Path>) -> anyhow::Result<Measured> {
    let s = scenario::parse::<M>("bench", source).map_err(anyhow::Error::msg)?;
    let mut best: Option<Measured> = None;
    for _ in 0..repeat.max(1) {
        let sink = match trace {
            Some(path) => {
                let file = File::create(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
                TraceSink::Stream(Box::new(file))
            }
            None => TraceSink::Discard,
        };
        let started = Instant::now();
        let report = Simulation::<M>::new(&s, s.seed, sink).run();
        let wall = started.elapsed();
        if let Some(e) = &report.trace_error {
            return Err(anyhow!("writing the bench trace failed: {e}"));
        }
        if best.as_ref().is_none_or(|b| wall < b.wall) {
            best = Some(Measured { report, wall });
        }
    }
    best.ok_or_else(|| anyhow!("no measurement"))
}

/// Payload bytes carried by the trace's deliveries and external inputs, read back from it.
fn payload_bytes(path: &Path) -> anyhow::Result<(u64, u64)> {
    let (_, reader) = TraceReader::open(path).map_err(anyhow::Error::msg)?;
    let mut payload = 0u64;
    let mut deliveries = 0u64;
    for event in reader {
        match &event.record {
            Record::Deliver { payload: p, .. } => {
                payload += p.len() as u64;
                deliveries += 1;
            }
            Record::External { payload: p, .. } => payload += p.len() as u64,
            _ => {}
        }
    }
    Ok((payload, deliveries))
}

fn report_pair(
    name: &str,
    with_trace: &Measured,
    without: &Measured,
    trace: &Path,
) -> anyhow::Result<()> {
    let d = with_trace.report.stats.delivered;
    let (payload, traced_deliveries) = payload_bytes(trace)?;
    if traced_deliveries != d {
        return Err(anyhow!(
            "{name}: trace holds {traced_deliveries} deliveries, the run made {d}"
        ));
    }
    let total = with_trace.report.trace_bytes;
    println!("{name}");
    println!(
        "  deliveries        {} in {} virtual ({} steps)",
        group(d),
        retrace_sim::format_ns(with_trace.report.end_time_ns),
        group(with_trace.report.stats.steps)
    );
    println!(
        "  trace written     {:>9.3}s  {:>12} deliveries",
        with_trace.wall.as_secs_f64(),
        rate(d, with_trace.wall)
    );
    println!(
        "  trace discarded   {:>9.3}s  {:>12} deliveries",
        without.wall.as_secs_f64(),
        rate(d, without.wall)
    );
    println!(
        "  trace size        {} = {:.1} B/delivery: {:.1} B payload + {:.1} B framing and metadata",
        bytes(total),
        total as f64 / d.max(1) as f64,
        payload as f64 / d.max(1) as f64,
        total.saturating_sub(payload) as f64 / d.max(1) as f64
    );
    Ok(())
}

pub fn run<L: crate::registry::Models>(
    _registry: &crate::registry::Registry<L>,
    args: &BenchArgs,
) -> anyhow::Result<u8> {
    std::fs::create_dir_all(&args.dir).map_err(|e| anyhow!("{}: {e}", args.dir.display()))?;
    match args.target {
        BenchTarget::Record => return self::record::run(args),
        BenchTarget::Replay => return self::replay::run(args),
        BenchTarget::Fuzz => return self::fuzz::run(args.seeds, args.only.as_deref()),
        BenchTarget::Tui => return self::tui::run(args),
        BenchTarget::Export => return self::export::run(args),
        BenchTarget::Lin => return self::lin::run(),
        BenchTarget::Capture => return self::capture::run(args),
        BenchTarget::Large => return self::large::run(args),
        BenchTarget::Fork => return self::fork::run(args),
        BenchTarget::Sim => {}
    }
    println!(
        "retrace bench (best of {}; release build expected)",
        args.repeat
    );

    let pp = pingpong_scenario(args.deliveries);
    let pp_trace = args.dir.join("pingpong.trace");
    let with_trace = measure::<PingPongModel>(&pp, args.repeat, Some(&pp_trace))?;
    let without = measure::<PingPongModel>(&pp, args.repeat, None)?;
    report_pair(
        "pingpong: 2 nodes, one message in flight, fixed 1ms latency",
        &with_trace,
        &without,
        &pp_trace,
    )?;

    let kv = kv_scenario(args.kv_seconds);
    let kv_trace = args.dir.join("kv.trace");
    let with_trace = measure::<KvModel>(&kv, args.repeat, Some(&kv_trace))?;
    let without = measure::<KvModel>(&kv, args.repeat, None)?;
    report_pair(
        "kv: 5 replicas, 10 clients, 5000 requests/s, 1-5ms latency",
        &with_trace,
        &without,
        &kv_trace,
    )?;
    Ok(crate::exit::OK)
}
