//! `retrace bench capture`: cutting a window out of a long recording costs time in proportion
//! to the window, not to the recording. A kv cluster records for a while in small segments
//! with snapshots; then windows of growing length around the middle of the run are
//! captured, and each capture's time, segments read and records written are reported.

use crate::bench::BenchArgs;
use crate::summary::group;
use anyhow::anyhow;
use retrace_recorder::capture::{capture, Around, CaptureOptions};
use retrace_recorder::launcher::{ClusterOptions, Load};
use retrace_recorder::policy::{LogPolicy, Retain, SnapshotEvery};
use std::time::{Duration, Instant};

const SCENARIO: &str =
    "# written by `retrace bench capture`\nmodel = \"kv\"\nseed = 1\ntime_limit = \"1h\"\n\
    [model_options]\nreplicas = 3\nclients = 3\nkeys = 64\n";

/// The recording is this many rounds long (`--round-seconds` each).
const RECORDING_ROUNDS: u64 = 5;
/// Each window is captured this many times; the median is reported.
const REPEATS: usize = 3;

pub fn run(args: &BenchArgs) -> anyhow::Result<u8> {
    let (dir, scenario_path, scenario) =
        crate::bench::record::kv_bench_dir(args, "capture", SCENARIO)?;
    let seconds = args.round_seconds * RECORDING_ROUNDS;
    let rec = dir.join("recording");
    let opts = ClusterOptions {
        exe: std::env::current_exe().map_err(|e| anyhow!("cannot find this program: {e}"))?,
        scenario_path,
        dir: rec.clone(),
        duration: Duration::from_secs(seconds),
        fsync: args.fsync.name().into(),
        batch_ms: args.batch_ms,
        record: true,
        strict: false,
        load: Load::Closed {
            workers: args.workers,
        },
        tls: true,
        policy: LogPolicy {
            segment_bytes_max: 64 << 10,
            segment_age_max: Duration::from_secs(3600),
            retain: Retain::All,
            snapshot_every: SnapshotEvery::Time(Duration::from_secs(1)),
        },
    };
    println!(
        "retrace bench capture: kv, 3 replicas + 3 clients, {} closed-loop workers, recorded for {seconds}s in 64 KiB segments with a snapshot every second",
        args.workers
    );
    let manifest =
        retrace_recorder::launcher::run_cluster::<retrace_models::KvModel>(&scenario, &opts)?;
    let middle = manifest.started_wall_ns / 2 + manifest.ended_wall_ns / 2;
    let whole_ms = (manifest.ended_wall_ns - manifest.started_wall_ns) / 1_000_000;
    let out = dir.join("window.trace");
    let mut first: Option<(f64, u64)> = None;
    for window_ms in [250, 1000, 4000, whole_ms] {
        let half = Duration::from_millis(window_ms / 2);
        let copts = CaptureOptions {
            around: Around::Time(middle),
            before: half,
            after: half,
        };
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..REPEATS {
            let started = Instant::now();
            let report = capture(std::slice::from_ref(&rec), &copts, &out)?;
            times.push(started.elapsed().as_secs_f64());
            last = Some(report);
        }
        times.sort_by(f64::total_cmp);
        let median = times[REPEATS / 2];
        let r = last.ok_or_else(|| anyhow!("no capture ran"))?;
        let (t0, w0) = *first.get_or_insert((median, window_ms));
        println!(
            "  window {:>6} ms: {:>7.1} ms ({:.1}x the first for {:.0}x the window), {} segments read, {} skipped, {} steps",
            window_ms,
            median * 1000.0,
            median / t0.max(1e-9),
            window_ms as f64 / w0 as f64,
            r.segments_read,
            r.segments_skipped,
            group(r.merge.steps)
        );
    }
    Ok(crate::exit::OK)
}
