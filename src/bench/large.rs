//! `retrace bench large`: a trace far larger than memory, opened through its index — the
//! first open (one validating pass that writes `TRACE.idx`), later opens, random record
//! reads, `why` on the last event, and this process's peak memory, which never holds the
//! records.

use crate::bench::replay::peak_rss;
use crate::bench::BenchArgs;
use crate::summary::{bytes, group, rate};
use anyhow::anyhow;
use retrace_replayer::index::{IndexFile, IndexedTrace};
use retrace_sim::SimRng;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub fn run(args: &BenchArgs) -> anyhow::Result<u8> {
    let records = args.large_records;
    println!(
        "retrace bench large (kv: 5 replicas, 10 clients, 5000 requests/s, one crash; {} records)",
        group(records)
    );
    std::fs::create_dir_all(&args.dir).map_err(|e| anyhow!("{}: {e}", args.dir.display()))?;
    let trace = args.dir.join("large.trace");
    let index = args.dir.join("large.trace.idx");
    let _ = std::fs::remove_file(&index);

    // Written by `retrace run` in its own process, streaming, so this process's memory is
    // the index's and the reads'.
    let scenario = args.dir.join("large.toml");
    let seconds = (records as f64 / 100_000.0).ceil().max(1.0) as u64;
    std::fs::write(
        &scenario,
        format!(
            "model = \"kv\"\nseed = 1\ntime_limit = \"{seconds}s\"\nmax_events = {}\n[model_options]\nreplicas = 5\nclients = 10\n\
             [network]\nlatency = \"1ms..5ms\"\n[workload]\nrate = \"5000/s\"\n[[faults]]\nat = \"1s\"\ncrash = \"replica-0\"\nrestart_after = \"500ms\"\n",
            records * 10 / 22
        ),
    )?;
    let started = Instant::now();
    let status = Command::new(std::env::current_exe()?)
        .args([
            "run",
            &scenario.display().to_string(),
            "-o",
            &trace.display().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .status()?;
    // A run that ends in a violation exits non-zero yet writes its trace.
    if !trace.exists() {
        return Err(anyhow!("retrace run wrote no trace ({status})"));
    }
    let run_time = started.elapsed();
    let trace_bytes = std::fs::metadata(&trace)?.len();
    println!(
        "  written       {} by `retrace run` in {:.1}s, with its index and the cluster's state every {} records (built alongside)",
        bytes(trace_bytes),
        run_time.as_secs_f64(),
        group(retrace_replayer::index::STATE_EVERY_RECORDS)
    );
    // Kept aside while the first open is measured building an index with no states (as
    // a trace merged from logs has), then put back for the cuts that start from them.
    let run_index = args.dir.join("large.trace.idx.run");
    std::fs::rename(&index, &run_index).map_err(|e| anyhow!("retrace run left no index ({e})"))?;

    let started = Instant::now();
    let first = IndexedTrace::open(&trace, IndexFile::Write).map_err(anyhow::Error::msg)?;
    let build = started.elapsed();
    let n = first.len();
    let index_bytes = std::fs::metadata(&index).map(|m| m.len()).unwrap_or(0);
    println!(
        "  first open    {} records indexed in {:.2}s ({}, validating every record); index file {} ({:.2}% of the trace)",
        group(n),
        build.as_secs_f64(),
        rate(n, build),
        bytes(index_bytes),
        index_bytes as f64 * 100.0 / trace_bytes.max(1) as f64
    );
    drop(first);

    let started = Instant::now();
    let mut t = IndexedTrace::open(&trace, IndexFile::Write).map_err(anyhow::Error::msg)?;
    let reopen = started.elapsed();
    if t.built {
        return Err(anyhow!("the index file was not used on the second open"));
    }
    println!("  later opens   {} (reads the index file)", ms(reopen));

    // Random reads: each a record far from the last, so nearly every one decodes a block.
    let mut rng = SimRng::new(7);
    let mut times: Vec<Duration> = Vec::with_capacity(args.jumps);
    for _ in 0..args.jumps {
        let i = rng.below(n.max(1));
        let started = Instant::now();
        t.event(i).map_err(anyhow::Error::msg)?;
        times.push(started.elapsed());
    }
    times.sort();
    if let (Some(median), Some(worst)) = (times.get(times.len() / 2), times.last()) {
        println!(
            "  random reads  {} median, {} worst over {} records ({} blocks decoded)",
            ms(*median),
            ms(*worst),
            times.len(),
            t.blocks_decoded()
        );
    }

    let started = Instant::now();
    let last = t
        .step_at_or_before(n.saturating_sub(1))
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| anyhow!("no steps"))?;
    let past = t.why(last, 40).map_err(anyhow::Error::msg)?;
    let why_time = started.elapsed();
    println!(
        "  why (last)    {}: {} events causally precede it, the 40 nearest read, {} faults in its history",
        ms(why_time),
        group(past.count),
        group(past.faults.len() as u64)
    );
    println!(
        "  peak memory   {} (this process: indexing and queries)",
        peak_rss()
    );

    // `retrace replay` without a terminal streams the file: its own process.
    let trace_arg = trace.display().to_string();
    let (replay_time, peak, said) = measure_child(&["replay", &trace_arg, "--headless"])?;
    let line = line_starting(&said, "replay");
    println!(
        "  replay        {:.1}s streaming from the file, peak memory {peak}: {}",
        replay_time.as_secs_f64(),
        line.trim()
    );

    // `retrace profile` reads a trace this large a chunk at a time through its index.
    let (profile_time, peak, said) = measure_child(&["profile", &trace_arg])?;
    let line = line_starting(&said, "all requests");
    println!(
        "  profile       {:.1}s for every request's critical path, a chunk at a time, peak memory {peak}: {}",
        profile_time.as_secs_f64(),
        line.trim()
    );

    // What the TUI opens a trace this large as: a window around its last event, cut by
    // re-executing to the window's start (`retrace cut` does the same in its own process).
    let window = args.dir.join("large-window.trace");
    let window_arg = window.display().to_string();
    // `retrace cut` of a million records around `around`, in its own process.
    let cut = |around: u64, label: &str, what: &str| -> anyhow::Result<()> {
        let around = around.to_string();
        let (time, peak, said) = measure_child(&[
            "cut",
            &trace_arg,
            "--around",
            &around,
            "--records",
            "1000000",
            "-o",
            &window_arg,
        ])?;
        let line = line_starting(&said, "window");
        println!(
            "  {label:<13} {:.1}s to cut 1 M records {what}, peak memory {peak}: {}",
            time.as_secs_f64(),
            line.trim_start_matches("window").trim()
        );
        Ok(())
    };
    cut(
        n.saturating_sub(1),
        "window cold",
        "at the end with no states (a merged recording's first cut)",
    )?;
    // The cut left the cluster's state every 500 k records with the index, as `retrace run`
    // did with its own: a cut anywhere starts from the nearest of those.
    cut(
        n / 2,
        "window again",
        "in the middle, from the states the first cut left",
    )?;
    std::fs::rename(&run_index, &index)?;
    cut(
        n.saturating_sub(1) - n / 4,
        "window (run)",
        "three quarters in, from the states `retrace run` left",
    )?;
    let started = Instant::now();
    let opened = retrace_sim::Trace::load(&window).map_err(anyhow::Error::msg)?;
    let replay = retrace_replayer::Replay::<retrace_models::KvModel>::new(opened)
        .map_err(anyhow::Error::msg)?;
    let causality = retrace_replayer::Causality::new(
        &replay.steps,
        &replay.trace.events,
        replay.trace.header.nodes.len(),
    );
    println!(
        "  window open   {} to load it with its steps and causality ({} records)",
        ms(started.elapsed()),
        group(replay.trace.events.len() as u64)
    );
    drop((causality, replay));
    let _ = std::fs::remove_file(&window);

    // The TUI on the trace, as `retrace replay` opens it on a terminal (a window at its
    // end, from the nearest state), to its first frame; then `(`, the window before it.
    // The child says how long each took; the process's own time adds its start and exit.
    let (process_time, peak, said) = measure_child(&["replay", &trace_arg, "--bench-open"])?;
    let line = line_starting(&said, "opened");
    println!(
        "  TUI open      {} (the whole process {:.1}s, peak memory {peak})",
        line.trim_start_matches("opened").trim(),
        process_time.as_secs_f64(),
    );
    cleanup(&trace, &index, args);
    Ok(crate::exit::OK)
}

/// The line of what a child said that starts with `prefix`, or a stand-in saying it is
/// missing.
fn line_starting<'a>(said: &'a str, prefix: &str) -> &'a str {
    said.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or("(no such line)")
}

/// Runs this binary with `args` and waits for it: how long it took, its peak memory
/// (VmHWM, sampled while it runs and read last just before it exits) and what it printed.
fn measure_child(args: &[&str]) -> anyhow::Result<(Duration, String, String)> {
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = String::from("unknown");
    // Bounded by the child's run: it ends, or `wait` below reaps it.
    while child.try_wait()?.is_none() {
        if let Some(hwm) = std::fs::read_to_string(&status_path).ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_string())
        }) {
            peak = hwm;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output()?;
    // A replay that finds a violation exits non-zero; what it printed says so.
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    Ok((started.elapsed(), peak, said))
}

/// The trace is gigabytes: kept only when asked.
fn cleanup(trace: &Path, index: &Path, args: &BenchArgs) {
    if !args.keep {
        let _ = std::fs::remove_file(trace);
        let _ = std::fs::remove_file(index);
        let _ = std::fs::remove_file(index.with_extension("idx.run"));
    }
}
