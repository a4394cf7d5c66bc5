//! `retrace bench record`: what recording costs a real cluster. A kv cluster (3 replicas)
//! runs on loopback under a fixed closed-loop load, round after round, with recording off and
//! on in turn, so that both modes see the same machine conditions; and as a flight recorder
//! (small segments that rotate, retention that deletes, snapshots), whose disk use is
//! sampled through the round against its bound. And a service call per request: webcache's
//! web tier over HTTP with a real redis-server in front of its database (each request a
//! `GET` or a `DEL` to Redis, whose bytes are recorded both ways), recording off and on.

use crate::bench::BenchArgs;
use crate::summary::group;
use anyhow::anyhow;
use retrace_recorder::launcher::{ClusterOptions, Load};
use retrace_recorder::log::LogRecord;
use retrace_recorder::manifest::Manifest;
use retrace_recorder::policy::{LogPolicy, Retain, SnapshotEvery};
use retrace_recorder::segments::{log_bytes_by_node, node_log_bytes, read_segments};
use std::path::Path;
use std::time::Duration;

const SCENARIO: &str =
    "# written by `retrace bench record`\nmodel = \"kv\"\nseed = 1\ntime_limit = \"1h\"\n\
    [model_options]\nreplicas = 3\nclients = 3\nkeys = 64\n";

/// The same cluster with clients that speak HTTP to the client port (kv's REST face): the
/// workers' requests go through the model's HTTP mapping, and each request and response is
/// recorded. The rate is there only because `protocol` belongs to a workload; the rounds'
/// closed-loop workers replace it.
const SCENARIO_HTTP: &str = "[workload]\nprotocol = \"http\"\nrate = \"1/s\"\n";

/// webcache (2 web nodes and the database) with its cache at `{addr}`: a Redis call per
/// request.
const SCENARIO_SERVICE: &str = "# written by `retrace bench record`\nmodel = \"webcache\"\nseed = 1\n\
    time_limit = \"1h\"\n[model_options]\nwebs = 2\nkeys = 64\n[services.cache]\naddress = \"{addr}\"\n\
    [workload]\nprotocol = \"http\"\nrate = \"1/s\"\n";

/// What a round runs: recording on or off, peer links over mutual TLS or plaintext, the
/// log kept with the default policy or as a flight recorder, clients over HTTP or the
/// framed port, and kv or webcache with its real Redis.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Mode {
    recording: bool,
    tls: bool,
    flight: bool,
    http: bool,
    service: bool,
}

/// The modes, alternated round by round so that each sees the same machine conditions:
/// recording off and on (both over TLS, the default), TLS off (recording on), and the
/// flight recorder (TLS, recording); recording off and on with clients over HTTP; and
/// recording off and on for webcache, a Redis call per request.
const MODES: [Mode; 8] = [
    Mode {
        recording: false,
        tls: true,
        flight: false,
        http: false,
        service: false,
    },
    Mode {
        recording: true,
        tls: true,
        flight: false,
        http: false,
        service: false,
    },
    Mode {
        recording: true,
        tls: false,
        flight: false,
        http: false,
        service: false,
    },
    Mode {
        recording: true,
        tls: true,
        flight: true,
        http: false,
        service: false,
    },
    Mode {
        recording: false,
        tls: true,
        flight: false,
        http: true,
        service: false,
    },
    Mode {
        recording: true,
        tls: true,
        flight: false,
        http: true,
        service: false,
    },
    Mode {
        recording: false,
        tls: true,
        flight: false,
        http: true,
        service: true,
    },
    Mode {
        recording: true,
        tls: true,
        flight: false,
        http: true,
        service: true,
    },
];

/// A redis-server of the distribution's package on a free port of 127.0.0.1, without
/// persistence, for the service rounds; stopped when dropped.
struct Redis(std::process::Child);

impl Redis {
    fn start() -> anyhow::Result<(Redis, std::net::SocketAddr)> {
        let addr = retrace_recorder::ports::free_addrs(1).map_err(anyhow::Error::msg)?[0];
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow!("cannot start redis-server (apt-get install redis-server): {e}")
            })?;
        let redis = Redis(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if std::time::Instant::now() > deadline {
                return Err(anyhow!("redis-server never listened on {addr}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((redis, addr))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The flight recorder's policy: segments small enough that the busiest node rotates (and
/// snapshots) every second or so and retention deletes within a round, snapshots every 10 s
/// as the issue sets them.
fn flight_policy() -> LogPolicy {
    LogPolicy {
        segment_bytes_max: 128 << 10,
        segment_age_max: Duration::from_secs(3600),
        retain: Retain::Bytes(512 << 10),
        snapshot_every: SnapshotEvery::Time(Duration::from_secs(10)),
    }
}

/// How often the sampler measures each node's log on disk.
const DISK_SAMPLE_INTERVAL: Duration = Duration::from_millis(25);

/// Samples the bytes each node's segments take in `dir` until `stop` (one directory listing
/// a sample); returns the most any node took.
fn sample_disk(
    dir: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let most = log_bytes_by_node(&dir).into_values().max().unwrap_or(0);
            peak = peak.max(most);
            std::thread::sleep(DISK_SAMPLE_INTERVAL);
        }
        peak
    })
}

struct Round {
    mode: Mode,
    manifest: Manifest,
    logs: LogStats,
    /// Flight recorder rounds: the most any node's segments took on disk at once.
    disk_peak_bytes: u64,
}

/// What the kept logs of a round hold.
#[derive(Default, Clone, Copy)]
struct LogStats {
    bytes: u64,
    records: u64,
    deliveries: u64,
    payload_bytes: u64,
    snapshots: u64,
    snapshot_bytes: u64,
    snapshot_us: u64,
    segments: u64,
}

fn log_stats(dir: &Path, manifest: &Manifest) -> LogStats {
    let mut s = LogStats::default();
    for n in &manifest.nodes {
        s.bytes += node_log_bytes(dir, &n.name);
        for inc in &n.incarnations {
            let Ok(read) = read_segments(dir, &n.name, &inc.log) else {
                continue;
            };
            s.segments += u64::from(read.segments);
            s.records += read.log.records.len() as u64;
            for r in &read.log.records {
                match r {
                    LogRecord::Deliver { payload: p, .. }
                    | LogRecord::External { payload: p, .. } => {
                        s.payload_bytes += p.len() as u64;
                        s.deliveries += u64::from(matches!(r, LogRecord::Deliver { .. }));
                    }
                    LogRecord::Snapshot {
                        took_us, snapshot, ..
                    } => {
                        s.snapshots += 1;
                        s.snapshot_us += took_us;
                        s.snapshot_bytes +=
                            retrace_sim::codec::encode(snapshot).map_or(0, |b| b.len() as u64);
                    }
                    _ => {}
                }
            }
        }
    }
    s
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

/// A fresh `args.dir/name` holding the kv scenario `text` (as `kv-bench.toml`), and the
/// scenario parsed: where the recording benchmarks start.
pub(crate) fn kv_bench_dir(
    args: &BenchArgs,
    name: &str,
    text: &str,
) -> anyhow::Result<(
    std::path::PathBuf,
    std::path::PathBuf,
    retrace_sim::Scenario<<retrace_models::KvModel as retrace_sim::Model>::Options>,
)> {
    let dir = args.dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    let scenario_path = dir.join("kv-bench.toml");
    std::fs::write(&scenario_path, text)
        .map_err(|e| anyhow!("{}: {e}", scenario_path.display()))?;
    let scenario = retrace_sim::scenario::parse::<retrace_models::KvModel>(
        &scenario_path.display().to_string(),
        text,
    )
    .map_err(anyhow::Error::msg)?;
    Ok((dir, scenario_path, scenario))
}

pub fn run(args: &BenchArgs) -> anyhow::Result<u8> {
    let (dir, scenario_path, scenario) = kv_bench_dir(args, "record", SCENARIO)?;
    let http_text = format!("{SCENARIO}{SCENARIO_HTTP}");
    let (_, http_path, http_scenario) = kv_bench_dir(args, "record-http", &http_text)?;
    let (_redis, redis_addr) = Redis::start()?;
    let service_text = SCENARIO_SERVICE.replace("{addr}", &redis_addr.to_string());
    let service_path = dir.join("webcache-bench.toml");
    std::fs::write(&service_path, &service_text)
        .map_err(|e| anyhow!("{}: {e}", service_path.display()))?;
    let service_scenario = retrace_sim::scenario::parse::<retrace_models::WebcacheModel>(
        &service_path.display().to_string(),
        &service_text,
    )
    .map_err(anyhow::Error::msg)?;
    let exe = std::env::current_exe().map_err(|e| anyhow!("cannot find this program: {e}"))?;
    println!(
        "retrace bench record: kv, 3 replicas + 3 clients on 127.0.0.1, {} closed-loop workers, fsync {} ({}ms), {} rounds of {}s",
        args.workers, args.fsync.name(), args.batch_ms, args.rounds, args.round_seconds
    );
    let mut rounds = Vec::new();
    for r in 0..(args.rounds as usize).max(MODES.len()) {
        // Each cycle through the modes starts one later, so that no mode always follows the
        // same one (a round inherits the disk writeback of the rounds before it).
        let (cycle, at) = (r / MODES.len(), r % MODES.len());
        let mode = MODES[(at + cycle) % MODES.len()];
        let recording = mode.recording;
        let run_dir = dir.join(format!("round-{r}"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = mode
            .flight
            .then(|| sample_disk(run_dir.clone(), stop.clone()));
        let opts = ClusterOptions {
            exe: exe.clone(),
            scenario_path: match (mode.service, mode.http) {
                (true, _) => service_path.clone(),
                (false, true) => http_path.clone(),
                (false, false) => scenario_path.clone(),
            },
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
            policy: if mode.flight {
                flight_policy()
            } else {
                LogPolicy::default()
            },
        };
        let manifest = if mode.service {
            retrace_recorder::launcher::run_cluster::<retrace_models::WebcacheModel>(
                &service_scenario,
                &opts,
            )
        } else {
            retrace_recorder::launcher::run_cluster::<retrace_models::KvModel>(
                if mode.http { &http_scenario } else { &scenario },
                &opts,
            )
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let disk_peak_bytes = sampler.and_then(|s| s.join().ok()).unwrap_or(0);
        let manifest = manifest?;
        let logs = if recording {
            log_stats(&run_dir, &manifest)
        } else {
            LogStats::default()
        };
        let w = &manifest.workload;
        println!(
            "  round {r} recording {:<6} tls {:<3} {:<6} {:>8.0} req/s  p50 {:>6}us  p99 {:>6}us  ({} answered, {} failed)",
            match (recording, mode.flight) {
                (false, _) => "off",
                (true, false) => "on",
                (true, true) => "flight",
            },
            if mode.tls { "on" } else { "off" },
            match (mode.service, mode.http) {
                (true, _) => "redis",
                (false, true) => "http",
                (false, false) => "framed",
            },
            w.throughput_per_s,
            w.p50_us,
            w.p99_us,
            group(w.answered),
            group(w.errors)
        );
        rounds.push(Round {
            mode,
            manifest,
            logs,
            disk_peak_bytes,
        });
    }
    let by = |m: Mode| rounds.iter().filter(move |r| r.mode == m);
    let tput = |m: Mode| median(by(m).map(|r| r.manifest.workload.throughput_per_s));
    let p50 = |m: Mode| median(by(m).map(|r| r.manifest.workload.p50_us as f64));
    let p99 = |m: Mode| median(by(m).map(|r| r.manifest.workload.p99_us as f64));
    let [off, on, plain, flight, http_off, http_on, redis_off, redis_on] = MODES;
    println!("summary (medians over rounds)");
    for (name, m) in [
        ("recording off, TLS", off),
        ("recording on,  TLS", on),
        ("recording on,  plaintext", plain),
        ("flight recorder, TLS", flight),
        ("HTTP clients, off, TLS", http_off),
        ("HTTP clients, on,  TLS", http_on),
        ("webcache+Redis, off, TLS", redis_off),
        ("webcache+Redis, on,  TLS", redis_on),
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
    cost("cost of flight recorder", off, flight);
    cost("cost of recording (HTTP)", http_off, http_on);
    cost("cost of recording (Redis)", redis_off, redis_on);
    let p = flight_policy();
    let flights = || rounds.iter().filter(|r| r.mode.flight);
    let peak = flights().map(|r| r.disk_peak_bytes).max().unwrap_or(0);
    let sum = |f: fn(&LogStats) -> u64| flights().map(|r| f(&r.logs)).sum::<u64>();
    let (snapshots, segments) = (sum(|l| l.snapshots), sum(|l| l.segments));
    println!(
        "  flight recorder: segments of {}, --retain {}, snapshots every {}; peak disk of a node {} ({:.0}% of the bound); {} segments kept, {} snapshots in them: {:.0} B and {:.0} us each",
        crate::summary::bytes(p.segment_bytes_max),
        crate::summary::bytes(match p.retain { Retain::Bytes(b) => b, _ => 0 }),
        p.snapshot_every,
        crate::summary::bytes(peak),
        peak as f64 * 100.0 / match p.retain { Retain::Bytes(b) => b as f64, _ => 1.0 },
        segments,
        snapshots,
        sum(|l| l.snapshot_bytes) as f64 / snapshots.max(1) as f64,
        sum(|l| l.snapshot_us) as f64 / snapshots.max(1) as f64,
    );
    for (name, http, service) in [
        ("kv, framed clients", false, false),
        ("kv, HTTP clients", true, false),
        ("webcache, HTTP clients, a Redis call each", true, true),
    ] {
        let recorded = rounds.iter().filter(|r| {
            let m = r.mode;
            m.recording && !m.flight && m.tls && m.http == http && m.service == service
        });
        let (bytes, answered) = recorded.fold((0, 0), |(b, a), r| {
            (b + r.logs.bytes, a + r.manifest.workload.answered)
        });
        println!(
            "  per request    {:.0} B of logs over the whole cluster ({name})",
            bytes as f64 / answered.max(1) as f64
        );
    }
    let recorded = || {
        rounds
            .iter()
            .filter(|r| r.mode.recording && !r.mode.flight && !r.mode.service)
    };
    let bytes: u64 = recorded().map(|r| r.logs.bytes).sum();
    let records: u64 = recorded().map(|r| r.logs.records).sum();
    let deliveries: u64 = recorded().map(|r| r.logs.deliveries).sum();
    let payload: u64 = recorded().map(|r| r.logs.payload_bytes).sum();
    println!(
        "  log size       {:.1} B/record; {:.1} B per delivery = {:.1} B payload + {:.1} B other",
        bytes as f64 / records.max(1) as f64,
        bytes as f64 / deliveries.max(1) as f64,
        payload as f64 / deliveries.max(1) as f64,
        bytes.saturating_sub(payload) as f64 / deliveries.max(1) as f64
    );
    Ok(crate::exit::OK)
}
