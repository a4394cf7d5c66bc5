//! `retrace bench fork`: forking at the end of a long trace, and `inevitable` on the kv
//! demo's recorded incident and on raft's double vote as the fuzzer finds it.

use crate::bench::replay::kv_trace_bytes;
use crate::bench::BenchArgs;
use crate::summary::{group, rate};
use anyhow::anyhow;
use retrace_models::KvModel;
use retrace_replayer::fork::{boundary, ForkWalk};
use retrace_replayer::what_if::Moment;
use retrace_replayer::Replay;
use retrace_sim::{ForkFuture, Intervention, Trace, TraceSink};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

pub fn run(args: &BenchArgs) -> anyhow::Result<u8> {
    println!("retrace bench fork (one run; 2 threads run inevitable's futures)");
    fork_at_the_end(args)?;
    let exe = std::env::current_exe().map_err(|e| anyhow!("cannot find this program: {e}"))?;
    let demo = args.dir.join("fork-demo");
    let _ = std::fs::remove_dir_all(&demo);
    let o = Command::new(&exe)
        .args(["demo", "--headless", "--dir"])
        .arg(&demo)
        .output()?;
    if !o.status.success() {
        return Err(anyhow!(
            "the demo failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    inevitable(
        &exe,
        "the kv demo's recorded incident",
        &demo.join("incident.trace"),
    )?;
    let fuzz = args.dir.join("fork-fuzz");
    let _ = std::fs::remove_dir_all(&fuzz);
    let o = Command::new(&exe)
        .args([
            "fuzz",
            "scenarios/raft-double-vote.toml",
            "--jobs",
            "1",
            "--time",
            "60s",
        ])
        .arg("--out")
        .arg(&fuzz)
        .output()?;
    if o.status.code() != Some(1) {
        return Err(anyhow!("the fuzzer did not find raft's double vote"));
    }
    let trace = std::fs::read_dir(&fuzz)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "trace"))
        .ok_or_else(|| anyhow!("the fuzzer wrote no trace"))?;
    inevitable(&exe, "raft's double vote, minimised by the fuzzer", &trace)?;
    Ok(crate::exit::OK)
}

/// Forks a long kv trace at its end: load, re-execute to the moment, start the future.
fn fork_at_the_end(args: &BenchArgs) -> anyhow::Result<()> {
    let (bytes, _) = kv_trace_bytes(args.replay_events)?;
    let path = args.dir.join("fork-kv.trace");
    std::fs::write(&path, &bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    drop(bytes);
    let out = args.dir.join("fork-kv-forked.trace");
    let started = Instant::now();
    let trace = Trace::load(&path).map_err(anyhow::Error::msg)?;
    let records = trace.events.len() as u64;
    let loaded = started.elapsed();
    let replay = Replay::<KvModel>::new(trace).map_err(anyhow::Error::msg)?;
    let steps = replay.steps.len() as u64;
    let mut walk = ForkWalk::new(&replay).map_err(anyhow::Error::msg)?;
    walk.advance(boundary(&replay, records.saturating_sub(1)))
        .map_err(anyhow::Error::msg)?;
    let walked = started.elapsed();
    let file = std::fs::File::create(&out).map_err(|e| anyhow!("{}: {e}", out.display()))?;
    let future = ForkFuture::default();
    let sim = walk
        .simulation(1_000_003, &future, TraceSink::Stream(Box::new(file)))
        .map_err(anyhow::Error::msg)?;
    let forked = started.elapsed();
    let report = sim.run();
    let ran = started.elapsed();
    drop(walk);
    // From a state checkpoint half-way (what the TUI's cursor keeps, and `retrace run`
    // leaves in a large trace's index every 500 k records): only the steps after it are
    // re-executed, the records before it only read.
    let mut checkpoint = replay.initial();
    while checkpoint.applied < replay.steps.len() / 2 {
        replay.apply(&mut checkpoint).map_err(|d| anyhow!("{d}"))?;
    }
    let half = replay.steps.steps[checkpoint.applied].input;
    let from_checkpoint = Instant::now();
    let mut walk = ForkWalk::from_cluster(&replay, checkpoint).map_err(anyhow::Error::msg)?;
    walk.advance(boundary(&replay, records.saturating_sub(1)))
        .map_err(anyhow::Error::msg)?;
    let point = walk.point().map_err(anyhow::Error::msg)?;
    let file = std::fs::File::create(&out).map_err(|e| anyhow!("{}: {e}", out.display()))?;
    let sim = walk
        .simulation_from(
            &point,
            1_000_003,
            &future,
            TraceSink::Stream(Box::new(file)),
        )
        .map_err(anyhow::Error::msg)?;
    let checkpointed = from_checkpoint.elapsed();
    drop(sim);
    let checkpoint_line = format!(
        "  from a state checkpoint at record {} (half-way, the trace loaded): {:.2}s to a \
         running fork ({} messages in flight, {} of them sent before the checkpoint and never \
         delivered, lost); target 1 s: {}",
        group(half as u64),
        checkpointed.as_secs_f64(),
        point.in_flight.len(),
        point.unknown_in_flight,
        verdict(checkpointed.as_secs_f64(), 1.0)
    );
    println!(
        "fork at the end of a {}-record kv trace ({} steps), as `retrace fork` does it: {:.2}s \
         to a running fork (load {:.2}s, re-execute every step from the start {:.2}s, start \
         the fork — its {} records before the moment written again — {:.2}s); target 1 s: {}",
        group(records),
        group(steps),
        forked.as_secs_f64(),
        loaded.as_secs_f64(),
        (walked - loaded).as_secs_f64(),
        group(records),
        (forked - walked).as_secs_f64(),
        verdict(forked.as_secs_f64(), 1.0)
    );
    println!(
        "  its future: {} steps to the scenario's time limit in {:.2}s ({})",
        group(report.stats.steps),
        (ran - forked).as_secs_f64(),
        rate(report.stats.steps, ran - forked)
    );
    println!("{checkpoint_line}");
    let _ = std::fs::remove_file(&out);
    what_if_half_way(&replay)
}

/// The TUI's what-if half-way through the long trace: `f` (walk to the moment and list
/// what is pending), then `Enter` with one message dropped (run the branch to the
/// scenario's end, in memory, and open it for replay).
fn what_if_half_way(replay: &Replay<KvModel>) -> anyhow::Result<()> {
    let at = replay.trace.events.len() as u64 / 2;
    let started = Instant::now();
    let moment = Moment::new(replay, at).map_err(anyhow::Error::msg)?;
    let walked = started.elapsed();
    let changes: Vec<Intervention> = moment
        .point
        .in_flight
        .first()
        .map(|m| Intervention::Drop { send: m.send })
        .into_iter()
        .collect();
    let branch = moment
        .branch(replay, moment.default_seed(), &changes)
        .map_err(anyhow::Error::msg)?;
    let ran = started.elapsed();
    let trace = Trace::from_bytes(&branch.bytes, "the branch").map_err(anyhow::Error::msg)?;
    let records = trace.events.len() as u64;
    let opened = Replay::<KvModel>::new(trace).map_err(anyhow::Error::msg)?;
    let open = started.elapsed();
    println!(
        "what-if half-way (record {}), as the TUI's f then Enter do it: {:.2}s to the panel \
         (re-execute from the start), {:.2}s to run the branch with one message dropped \
         ({} steps after the moment, {} records in all), {:.2}s to open it for replay \
         ({} steps); {:.2}s in all",
        group(at),
        walked.as_secs_f64(),
        (ran - walked).as_secs_f64(),
        group(branch.report.stats.steps),
        group(records),
        (open - ran).as_secs_f64(),
        group(opened.steps.len() as u64),
        open.as_secs_f64()
    );
    Ok(())
}

fn verdict(secs: f64, target: f64) -> String {
    if secs <= target {
        format!("met ({:.2}× of it)", secs / target)
    } else {
        format!("missed by {:.0}%", (secs / target - 1.0) * 100.0)
    }
}

/// Runs `retrace inevitable` on `trace` with 64 samples, and reports its time and forks.
fn inevitable(exe: &Path, what: &str, trace: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let o = Command::new(exe)
        .args(["inevitable", "--samples", "64", "--jobs", "2"])
        .arg(trace)
        .output()?;
    let wall = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    if !o.status.success() {
        return Err(anyhow!(
            "inevitable on {}: {}",
            trace.display(),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let futures = text
        .lines()
        .find(|l| l.starts_with("futures"))
        .unwrap_or_default()
        .trim_start_matches("futures")
        .trim();
    let reading = text
        .lines()
        .find(|l| l.starts_with("reading"))
        .unwrap_or_default()
        .trim_start_matches("reading")
        .trim();
    println!(
        "inevitable on {what}: {wall:.1}s in all; target 30 s: {}\n  {futures}\n  {reading}",
        verdict(wall, 30.0)
    );
    Ok(())
}
