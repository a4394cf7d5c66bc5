//! `retrace bench replay`: re-execution speed against the simulator's own, jump times on a
//! long trace, causality and critical-path query times, peak memory.

use crate::bench::BenchArgs;
use crate::summary::{bytes, group, rate, short_ns};
use anyhow::anyhow;
use retrace_models::KvModel;
use retrace_replayer::profile::Profiler;
use retrace_replayer::{Causality, CheckpointPolicy, Cursor, Replay};
use retrace_sim::{scenario, SimRng, Simulation, Trace, TraceSink};
use std::time::{Duration, Instant};

/// kv with 5 replicas and 10 clients under load, with a crash: run until `records` records.
pub(crate) fn kv_trace(records: u64) -> anyhow::Result<(Trace, Duration)> {
    let (bytes, sim) = kv_trace_bytes(records)?;
    let trace = Trace::from_bytes(&bytes, "bench-kv").map_err(anyhow::Error::msg)?;
    Ok((trace, sim))
}

/// The same trace, encoded as a file holds it.
pub(crate) fn kv_trace_bytes(records: u64) -> anyhow::Result<(Vec<u8>, Duration)> {
    // About 120 k records per virtual second at this load; `max_events` stops it there.
    let seconds = (records as f64 / 100_000.0).ceil().max(1.0) as u64;
    let source = format!(
        "model = \"kv\"\nseed = 1\ntime_limit = \"{seconds}s\"\nmax_events = {}\n[model_options]\nreplicas = 5\nclients = 10\n\
         [network]\nlatency = \"1ms..5ms\"\n[workload]\nrate = \"5000/s\"\n[[faults]]\nat = \"1s\"\ncrash = \"replica-0\"\nrestart_after = \"500ms\"\n",
        records * 10 / 22
    );
    let s = scenario::parse::<KvModel>("bench-kv.toml", &source).map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let report = Simulation::<KvModel>::new(&s, 1, TraceSink::Memory).run();
    let sim = started.elapsed();
    let bytes = report.trace.ok_or_else(|| anyhow!("no trace kept"))?;
    Ok((bytes, sim))
}

pub(crate) fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn run(args: &BenchArgs) -> anyhow::Result<u8> {
    println!("retrace bench replay (kv: 5 replicas, 10 clients, 5000 requests/s, one crash)");

    // Re-execution against simulation, on the same trace.
    let (trace, sim_time) = kv_trace(args.replay_events)?;
    let records = trace.events.len() as u64;
    let replay = Replay::<KvModel>::new(trace).map_err(anyhow::Error::msg)?;
    let steps = replay.steps.len() as u64;
    let started = Instant::now();
    let mut cursor = Cursor::new(replay, CheckpointPolicy::default());
    cursor.run_to_end();
    let replay_time = started.elapsed();
    if let Some(d) = cursor.divergence() {
        return Err(anyhow!("the bench trace diverged: {d}"));
    }
    println!(
        "  trace             {} records, {} steps",
        group(records),
        group(steps)
    );
    println!(
        "  simulate          {:>8.3}s  {:>12} steps",
        sim_time.as_secs_f64(),
        rate(steps, sim_time)
    );
    println!(
        "  re-execute        {:>8.3}s  {:>12} steps  ({:.2}x the simulator's time; {} checkpoints, {})",
        replay_time.as_secs_f64(),
        rate(steps, replay_time),
        replay_time.as_secs_f64() / sim_time.as_secs_f64().max(1e-9),
        cursor.checkpoint_count(),
        bytes(cursor.checkpoint_bytes() as u64)
    );

    // Causality and profiles on the same trace.
    let r = cursor.replay();
    let started = Instant::now();
    let causality = Causality::new(&r.steps, &r.trace.events, r.node_names.len());
    let build = started.elapsed();
    let mut rng = SimRng::new(7);
    let mut why_times = Vec::new();
    for _ in 0..20 {
        let s = rng.below(steps) as usize;
        let t = Instant::now();
        let n = causality.why(s).len();
        why_times.push((t.elapsed(), n));
    }
    why_times.sort();
    let profiler = Profiler::new(&r.trace.events, &r.steps, &causality, &r.node_names);
    let requests: Vec<_> = profiler.requests().collect();
    let started = Instant::now();
    let mut paths = 0usize;
    for id in &requests {
        paths += usize::from(profiler.request(*id).is_some());
    }
    let per_path = started.elapsed() / (paths.max(1) as u32);
    println!(
        "  causality         {:>8.3}s to build (vector clocks for every step)",
        build.as_secs_f64()
    );
    println!(
        "  why               median {} worst {} ({} events in the worst answer)",
        short_ns(why_times[why_times.len() / 2].0.as_nanos() as u64),
        short_ns(why_times[why_times.len() - 1].0.as_nanos() as u64),
        group(why_times[why_times.len() - 1].1 as u64)
    );
    println!(
        "  critical path     {} per request ({} requests)",
        short_ns(per_path.as_nanos() as u64),
        group(paths as u64)
    );
    drop(profiler);
    drop(causality);
    drop(cursor);

    // Jumps on a long trace.
    let (trace, _) = kv_trace(args.jump_events)?;
    let records = trace.events.len();
    let replay = Replay::<KvModel>::new(trace).map_err(anyhow::Error::msg)?;
    let steps = replay.steps.len();
    let policy = CheckpointPolicy::default();
    let started = Instant::now();
    let mut cursor = Cursor::new(replay, policy);
    cursor.run_to_end();
    let first_pass = started.elapsed();
    let mut jumps = Vec::new();
    for _ in 0..args.jumps {
        let k = rng.below(steps as u64) as usize;
        let t = Instant::now();
        cursor.goto(k);
        jumps.push(t.elapsed());
    }
    jumps.sort();
    println!(
        "  long trace        {} records, {} steps; first pass {:.2}s, {} checkpoints, {} (budget {})",
        group(records as u64),
        group(steps as u64),
        first_pass.as_secs_f64(),
        cursor.checkpoint_count(),
        bytes(cursor.checkpoint_bytes() as u64),
        bytes(policy.budget_bytes as u64)
    );
    println!(
        "  jump              median {} worst {} over {} random jumps",
        short_ns(jumps[jumps.len() / 2].as_nanos() as u64),
        short_ns(jumps[jumps.len() - 1].as_nanos() as u64),
        jumps.len()
    );
    println!("  peak memory       {}", peak_rss());
    Ok(crate::exit::OK)
}
