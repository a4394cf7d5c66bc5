//! `retrace bench record`: what recording costs a real cluster. A kv cluster (3 replicas)
//! runs on loopback under a fixed closed-loop load, round after round, with recording off and
//! on in turn, so that both modes see the same machine conditions.

use crate::bench::BenchArgs;
use crate::summary::group;
use anyhow::anyhow;
use retrace_recorder::launcher::{ClusterOptions, Load};
use retrace_recorder::log::{read_log, LogRecord};
use retrace_recorder::manifest::Manifest;
use std::path::Path;
use std::time::Duration;

const SCENARIO: &str =
    "# written by `retrace bench record`\nmodel = \"kv\"\nseed = 1\ntime_limit = \"1h\"\n\
    [model_options]\nreplicas = 3\nclients = 3\nkeys = 64\n";

/// What a round runs: recording on or off, peer links over mutual TLS or plaintext.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Mode {
    recording: bool,
    tls: bool,
}

/// The modes, alternated round by round so that each sees the same machine conditions:
/// recording off and on (both over TLS, the default), and TLS off (recording on).
const MODES: [Mode; 3] = [
    Mode {
        recording: false,
        tls: true,
    },
    Mode {
        recording: true,
        tls: true,
    },
    Mode {
        recording: true,
        tls: false,
    },
];

struct Round {
    mode: Mode,
    manifest: Manifest,
    log_bytes: u64,
    records: u64,
    deliveries: u64,
    payload_bytes: u64,
}

fn log_stats(dir: &Path, manifest: &Manifest) -> (u64, u64, u64, u64) {
    let (mut bytes, mut records, mut deliveries, mut payload) = (0, 0, 0, 0);
    for n in &manifest.nodes {
        for inc in &n.incarnations {
            let path = dir.join(&inc.log);
            bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
            if let Ok(log) = read_log(&path) {
                records += log.records.len() as u64;
                for r in &log.records {
                    if let LogRecord::Deliver { payload: p, .. }
                    | LogRecord::External { payload: p, .. } = r
                    {
                        payload += p.len() as u64;
                        deliveries += u64::from(matches!(r, LogRecord::Deliver { .. }));
                    }
                }
            }
        }
    }
    (bytes, records, deliveries, payload)
}

/// The median: one disturbed round on a shared machine should not move the figure.
fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<u8> {
    let dir = args.dir.join("record");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    let scenario_path = dir.join("kv-bench.toml");
    std::fs::write(&scenario_path, SCENARIO)
        .map_err(|e| anyhow!("{}: {e}", scenario_path.display()))?;
    let scenario = retrace_sim::scenario::parse::<retrace_models::KvModel>(
        &scenario_path.display().to_string(),
        SCENARIO,
    )
    .map_err(anyhow::Error::msg)?;
    let exe = std::env::current_exe().map_err(|e| anyhow!("cannot find this program: {e}"))?;
    println!(
        "retrace bench record: kv, 3 replicas + 3 clients on 127.0.0.1, {} closed-loop workers, fsync {} ({}ms), {} rounds of {}s",
        args.workers, args.fsync.name(), args.batch_ms, args.rounds, args.round_seconds
    );
    let mut rounds = Vec::new();
    for r in 0..(args.rounds as usize).max(MODES.len()) {
        let mode = MODES[r % MODES.len()];
        let recording = mode.recording;
        let run_dir = dir.join(format!("round-{r}"));
        let opts = ClusterOptions {
            exe: exe.clone(),
            scenario_path: scenario_path.clone(),
            dir: run_dir.clone(),
            duration: Duration::from_secs(args.round_seconds),
            fsync: args.fsync.name().into(),
            batch_ms: args.batch_ms,
            record: recording,
            strict: false,
            load: Load::Closed {
                workers: args.workers,
            },
            tls: mode.tls,
        };
        let manifest =
            retrace_recorder::launcher::run_cluster::<retrace_models::KvModel>(&scenario, &opts)?;
        let (log_bytes, records, deliveries, payload_bytes) = if recording {
            log_stats(&run_dir, &manifest)
        } else {
            (0, 0, 0, 0)
        };
        let w = &manifest.workload;
        println!(
            "  round {r} recording {:<3} tls {:<3}  {:>8.0} req/s  p50 {:>6}us  p99 {:>6}us  ({} answered, {} failed)",
            if recording { "on" } else { "off" },
            if mode.tls { "on" } else { "off" },
            w.throughput_per_s,
            w.p50_us,
            w.p99_us,
            group(w.answered),
            group(w.errors)
        );
        rounds.push(Round {
            mode,
            manifest,
            log_bytes,
            records,
            deliveries,
            payload_bytes,
        });
    }
    let by = |m: Mode| rounds.iter().filter(move |r| r.mode == m);
    let tput = |m: Mode| median(by(m).map(|r| r.manifest.workload.throughput_per_s));
    let p50 = |m: Mode| median(by(m).map(|r| r.manifest.workload.p50_us as f64));
    let p99 = |m: Mode| median(by(m).map(|r| r.manifest.workload.p99_us as f64));
    let [off, on, plain] = MODES;
    println!("summary (medians over rounds)");
    for (name, m) in [
        ("recording off, TLS", off),
        ("recording on,  TLS", on),
        ("recording on,  plaintext", plain),
    ] {
        println!(
            "  {name:<26} {:>8.0} req/s  p50 {:>7.0}us  p99 {:>7.0}us",
            tput(m),
            p50(m),
            p99(m)
        );
    }
    let cost = |what: &str, base: Mode, with: Mode| {
        println!(
            "  {what:<26} throughput {:+.1}%, p99 {:+.1}%",
            (tput(with) / tput(base).max(1e-9) - 1.0) * 100.0,
            (p99(with) / p99(base).max(1e-9) - 1.0) * 100.0
        )
    };
    cost("cost of recording (TLS)", off, on);
    cost("cost of TLS (recording)", plain, on);
    let recorded = || rounds.iter().filter(|r| r.mode.recording);
    let bytes: u64 = recorded().map(|r| r.log_bytes).sum();
    let records: u64 = recorded().map(|r| r.records).sum();
    let deliveries: u64 = recorded().map(|r| r.deliveries).sum();
    let payload: u64 = recorded().map(|r| r.payload_bytes).sum();
    println!(
        "  log size       {:.1} B/record; {:.1} B per delivery = {:.1} B payload + {:.1} B other",
        bytes as f64 / records.max(1) as f64,
        bytes as f64 / deliveries.max(1) as f64,
        payload as f64 / deliveries.max(1) as f64,
        bytes.saturating_sub(payload) as f64 / deliveries.max(1) as f64
    );
    Ok(crate::exit::OK)
}
