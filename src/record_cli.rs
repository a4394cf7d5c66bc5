//! The recording commands: `node`, `cluster`, `client`, `merge`, `verify`.

use crate::cli::{on_scenario_file, say, tell};
use crate::exit;
use crate::registry::{Models, Registry, ScenarioFn, ScenarioInfo};
use crate::summary::{bytes, group};
use anyhow::anyhow;
use clap::Args;
use retrace_recorder::launcher::run_cluster;
use retrace_recorder::launcher::{ClusterOptions, Load};
use retrace_recorder::net::{Limits, Transport};
use retrace_recorder::policy::{self, LogPolicy, Retain, SnapshotEvery};
use retrace_recorder::tls::{Tls, TlsFiles};
use retrace_recorder::verify::{verify_dir, VerifyReport};
use retrace_recorder::{run_node, NodeSummary};
use retrace_recorder::{Fsync, NodeOptions};
use retrace_sim::scenario::parse_duration_ns;
use retrace_sim::NodeId;
use retrace_sim::{Model, Scenario};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `--fsync`, as typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncArg {
    Always,
    Batch,
    Never,
}

impl FsyncArg {
    pub fn policy(self, batch_ms: u64) -> Fsync {
        match self {
            FsyncArg::Always => Fsync::Always,
            FsyncArg::Batch => Fsync::Batch {
                interval: Duration::from_millis(batch_ms.max(1)),
            },
            FsyncArg::Never => Fsync::Never,
        }
    }

    /// As the command line spells it (passed on to node processes).
    pub fn name(self) -> &'static str {
        match self {
            FsyncArg::Always => "always",
            FsyncArg::Batch => "batch",
            FsyncArg::Never => "never",
        }
    }
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The scenario the node belongs to
    scenario: PathBuf,
    /// This node's id (its index in the scenario's node list)
    #[arg(long)]
    id: u32,
    /// Which life of the node this is (0 = first start)
    #[arg(long, default_value_t = 0)]
    incarnation: u32,
    /// Every node's peer address, in node order, comma-separated
    #[arg(long, value_delimiter = ',', required = true)]
    peers: Vec<SocketAddr>,
    /// Address of this node's client port (external requests, framed JSON)
    #[arg(long)]
    client: SocketAddr,
    /// Record into this log file (omit to run unrecorded)
    #[arg(long)]
    log: Option<PathBuf>,
    /// File that holds the node's durable storage
    #[arg(long)]
    storage: PathBuf,
    /// When the log is forced to disk: always, batch (group commit), never
    #[arg(long, value_enum, default_value_t = FsyncArg::Batch)]
    fsync: FsyncArg,
    /// Group-commit interval for --fsync batch, in milliseconds
    #[arg(long, default_value_t = 20)]
    batch_ms: u64,
    /// Stop the node if recording fails (default: warn, stop recording, keep serving)
    #[arg(long)]
    record_strict: bool,
    /// This node's certificate chain (PEM), for mutual TLS between nodes; its name must be
    /// `node-ID.retrace`
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// This node's private key (PEM)
    #[arg(long, value_name = "PEM", requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): peers must present certificates it signed
    #[arg(long, value_name = "PEM", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// Run peer links as plaintext TCP: INSECURE, anyone who reaches the peer port can
    /// claim to be any node
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_ca"])]
    insecure_plaintext: bool,
    /// Open connections allowed on the peer port [default: 64, or twice the node count]
    #[arg(long, value_name = "N")]
    max_peer_connections: Option<usize>,
    /// Open connections allowed on the client port
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_client_connections: usize,
    #[command(flatten)]
    log_policy: LogPolicyArgs,
}

/// How each node's log is kept: segments, retention, snapshots (`retrace_recorder::policy`).
#[derive(Args, Debug, Clone)]
pub struct LogPolicyArgs {
    /// Start a new log segment once the current one holds this much (64MiB, 500KB, ...)
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = policy::parse_segment_size)]
    segment_size: u64,
    /// ...or once it is this old (1h, 10m, ...)
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = policy::parse_segment_age)]
    segment_age: Duration,
    /// What a node keeps of its log on disk, all its lives together: a size (1GiB), an age
    /// (7d) or all; whole segments are deleted, oldest first
    #[arg(long, value_name = "SIZE|AGE|all", default_value = "1GiB")]
    retain: Retain,
    /// How often a node's state is snapshotted into its log, so that replay and verify can
    /// start there: a duration (10s), a number of records (50000), or never (only where a
    /// segment starts)
    #[arg(long, value_name = "DURATION|RECORDS|never", default_value = "10s")]
    snapshot_every: SnapshotEvery,
}

impl Default for LogPolicyArgs {
    fn default() -> Self {
        let p = LogPolicy::default();
        LogPolicyArgs {
            segment_size: p.segment_bytes_max,
            segment_age: p.segment_age_max,
            retain: p.retain,
            snapshot_every: p.snapshot_every,
        }
    }
}

impl LogPolicyArgs {
    pub(crate) fn policy(&self) -> anyhow::Result<LogPolicy> {
        if let Retain::Bytes(max) = self.retain {
            // Retention keeps room for the segment being written to fill: a bound below two
            // segments would delete each segment as soon as the next one starts.
            if max < 2 * self.segment_size {
                return Err(anyhow!(
                    "--retain {} keeps less than two segments of --segment-size {}: make it at least {}",
                    bytes(max),
                    bytes(self.segment_size),
                    bytes(2 * self.segment_size)
                ));
            }
        }
        Ok(LogPolicy {
            segment_bytes_max: self.segment_size,
            segment_age_max: self.segment_age,
            retain: self.retain,
            snapshot_every: self.snapshot_every,
        })
    }
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// The scenario whose nodes to run
    pub(crate) scenario: PathBuf,
    /// Directory for the logs and manifest (created)
    #[arg(long, value_name = "DIR")]
    pub(crate) record: PathBuf,
    /// How long to run [default: the scenario's time_limit]
    #[arg(long)]
    pub(crate) duration: Option<String>,
    /// When logs are forced to disk: always, batch, never
    #[arg(long, value_enum, default_value_t = FsyncArg::Batch)]
    pub(crate) fsync: FsyncArg,
    /// Group-commit interval for --fsync batch, in milliseconds
    #[arg(long, default_value_t = 20)]
    pub(crate) batch_ms: u64,
    /// Run the nodes without recording (for comparison)
    #[arg(long)]
    pub(crate) no_record: bool,
    /// Nodes stop if recording fails
    #[arg(long)]
    pub(crate) record_strict: bool,
    /// Instead of the scenario's open-loop workload, N clients in a closed loop
    #[arg(long, value_name = "N")]
    pub(crate) closed_loop: Option<usize>,
    /// Run peer links as plaintext TCP instead of mutual TLS: INSECURE, anyone who reaches
    /// a peer port can claim to be any node
    #[arg(long)]
    pub(crate) insecure_plaintext: bool,
    /// For a caller that goes on with the recording itself (the demo): no "next" hint and no
    /// notes about faults the real network does not inject.
    #[arg(skip)]
    pub(crate) quiet: bool,
    #[command(flatten)]
    pub(crate) log_policy: LogPolicyArgs,
}

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// A node's client address
    addr: SocketAddr,
    /// The request: a message of the node's model, as JSON (e.g. '{"Op":{"Get":{"key":"k1"}}}')
    request: String,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// A recorded run's directory (from `retrace cluster --record`)
    pub(crate) dir: PathBuf,
    /// The trace to write
    #[arg(long, short = 'o', value_name = "TRACE")]
    pub(crate) out: PathBuf,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// A recorded run's directory
    dir: PathBuf,
}

fn duration_arg(text: &str) -> anyhow::Result<Duration> {
    parse_duration_ns(text, false)
        .map(|ns| Duration::from_nanos(ns as u64))
        .map_err(|e| anyhow!("--duration {e}"))
}

/// Mutual TLS from the node's files, or plaintext when asked for by name: never plaintext
/// by default.
fn node_transport(args: &NodeArgs) -> anyhow::Result<Transport> {
    match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => {
            let files = TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            };
            Ok(Transport::Tls(Arc::new(Tls::load(&files)?)))
        }
        _ if args.insecure_plaintext => Ok(Transport::Plaintext),
        _ => Err(anyhow!(
            "peer links need --tls-cert, --tls-key and --tls-ca (mutual TLS), or \
             --insecure-plaintext to run them unauthenticated"
        )),
    }
}

pub fn node<L: Models>(registry: &Registry<L>, args: &NodeArgs) -> anyhow::Result<u8> {
    let opts = NodeOptions {
        id: NodeId(args.id),
        incarnation: args.incarnation,
        peer_addrs: args.peers.clone(),
        client_addr: args.client,
        log_path: args.log.clone(),
        storage_path: args.storage.clone(),
        fsync: args.fsync.policy(args.batch_ms),
        policy: args.log_policy.policy()?,
        strict: args.record_strict,
        transport: node_transport(args)?,
        limits: Limits {
            peer_connections_max: args.max_peer_connections.unwrap_or_else(|| {
                Limits::default()
                    .peer_connections_max
                    .max(2 * args.peers.len())
            }),
            client_connections_max: args.max_client_connections,
            ..Limits::default()
        },
    };
    // The launcher stops a node by closing its stdin.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = stop_tx.send(());
    });
    struct RunNode<'a>(&'a NodeOptions, std::sync::mpsc::Receiver<()>);
    impl ScenarioFn for RunNode<'_> {
        type Out = NodeSummary;
        fn call<M: Model>(self, _: &str, s: Scenario<M::Options>) -> anyhow::Result<NodeSummary> {
            run_node::<M>(&s, self.0, Some(self.1)).map_err(anyhow::Error::msg)
        }
    }
    let summary = on_scenario_file(registry, &args.scenario, RunNode(&opts, stop_rx))?;
    tell!(
        "node {} stopped: {} events, {} delivered ({} duplicates dropped), {} external, log {} in {} segment(s), {} deleted by retention{}",
        args.id,
        summary.events,
        summary.delivered,
        summary.duplicates_dropped,
        summary.external,
        bytes(summary.log_bytes),
        summary.segments,
        summary.segments_retired,
        if summary.recording || args.log.is_none() {
            ""
        } else {
            " (INCOMPLETE: recording stopped)"
        }
    );
    Ok(exit::OK)
}

pub fn cluster<L: Models>(registry: &Registry<L>, args: &ClusterArgs) -> anyhow::Result<u8> {
    struct Cluster<'a>(&'a ClusterArgs);
    impl ScenarioFn for Cluster<'_> {
        type Out = u8;
        fn call<M: Model>(self, file: &str, s: Scenario<M::Options>) -> anyhow::Result<u8> {
            cluster_model::<M>(file, &s, self.0)
        }
    }
    on_scenario_file(registry, &args.scenario, Cluster(args))
}

fn cluster_model<M: Model>(
    file: &str,
    s: &Scenario<M::Options>,
    args: &ClusterArgs,
) -> anyhow::Result<u8> {
    let info = ScenarioInfo::of(s, None);
    let duration = match &args.duration {
        Some(d) => duration_arg(d)?,
        None => Duration::from_nanos(info.time_limit_ns),
    };
    let opts = ClusterOptions {
        exe: std::env::current_exe().map_err(|e| anyhow!("cannot find this program: {e}"))?,
        scenario_path: args.scenario.clone(),
        dir: args.record.clone(),
        duration,
        fsync: args.fsync.name().into(),
        batch_ms: args.batch_ms,
        record: !args.no_record,
        strict: args.record_strict,
        load: args
            .closed_loop
            .map_or(Load::Scenario, |workers| Load::Closed { workers }),
        tls: !args.insecure_plaintext,
        policy: args.log_policy.policy()?,
    };
    if !args.quiet {
        say!(
            "starting  {} nodes of {file} for {:.1}s; logs and manifest.json in {}{}",
            info.nodes.len(),
            duration.as_secs_f64(),
            args.record.display(),
            if args.no_record {
                " (not recording)"
            } else {
                ""
            }
        );
    }
    // A long run shows it is alive (on a terminal only: indicatif draws nothing otherwise).
    let bar = indicatif::ProgressBar::new(duration.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed}/{msg} [{wide_bar}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("{:.0}s", duration.as_secs_f64()));
    let done = std::sync::atomic::AtomicBool::new(false);
    let manifest = std::thread::scope(|scope| {
        scope.spawn(|| {
            let started = std::time::Instant::now();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                bar.set_position(started.elapsed().as_millis() as u64);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let manifest = run_cluster::<M>(s, &opts);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        manifest
    });
    bar.finish_and_clear();
    let manifest = manifest?;
    for w in manifest.warnings.iter().filter(|_| !args.quiet) {
        tell!("warning: {w}");
    }
    let w = &manifest.workload;
    say!(
        "cluster   {file} (model {}), {} nodes for {:.1}s",
        manifest.model,
        manifest.nodes.len(),
        duration.as_secs_f64()
    );
    say!(
        "requests  {} sent, {} answered, {} failed; {:.0}/s; latency p50 {}us p99 {}us",
        group(w.sent),
        group(w.answered),
        group(w.errors),
        w.throughput_per_s,
        w.p50_us,
        w.p99_us
    );
    let mut total = 0u64;
    for n in &manifest.nodes {
        let lives: Vec<String> = n.incarnations.iter().map(|i| i.ended.to_string()).collect();
        // Every segment of every life still on disk (retention may have deleted some).
        let size = retrace_recorder::segments::node_log_bytes(&args.record, &n.name);
        total += size;
        say!(
            "  {:<12} {:<8} {:<22} log {}",
            n.name,
            n.role,
            lives.join(", "),
            bytes(size)
        );
    }
    if args.quiet {
        say!(
            "recorded  {} ({} of logs)",
            args.record.display(),
            bytes(total)
        );
    } else {
        say!(
            "recorded  {} ({} of logs); next: {} merge {} -o incident.trace",
            args.record.display(),
            bytes(total),
            crate::cli::program(),
            args.record.display()
        );
    }
    Ok(exit::OK)
}

pub fn client(args: &ClientArgs) -> anyhow::Result<u8> {
    serde_json::from_str::<serde_json::Value>(&args.request)
        .map_err(|e| anyhow!("the request is not JSON: {e}"))?;
    let mut c = retrace_recorder::client::Client::connect(args.addr, Duration::from_secs(2))
        .map_err(|e| anyhow!("{}: {e}", args.addr))?;
    let reply = c
        .request(args.request.as_bytes())
        .map_err(|e| anyhow!("{}: {e}", args.addr))?;
    say!("{reply}");
    Ok(if reply.get("error").is_some() {
        exit::BAD_INPUT
    } else {
        exit::OK
    })
}

pub fn merge(args: &MergeArgs) -> anyhow::Result<u8> {
    let report = retrace_recorder::merge::merge(&args.dir, &args.out)?;
    for n in &report.retained {
        tell!("note: {n}");
    }
    for p in &report.problems {
        tell!("warning: {p}");
    }
    say!(
        "merged    {} logs into {}: {} steps, {} records, {}",
        report.logs,
        args.out.display(),
        group(report.steps),
        group(report.records),
        bytes(report.bytes)
    );
    if report.duplicates_dropped + report.black_box_messages > 0 {
        say!(
            "          {} duplicate deliveries dropped, {} messages whose send was never logged (delivered without a causal link)",
            report.duplicates_dropped, report.black_box_messages
        );
    }
    Ok(exit::OK)
}

pub fn verify<L: Models>(registry: &Registry<L>, args: &VerifyArgs) -> anyhow::Result<u8> {
    let manifest = retrace_recorder::manifest::Manifest::read(&args.dir)?;
    let file = Path::new(&manifest.scenario_name).display().to_string();
    struct Verify<'a>(&'a Path);
    impl ScenarioFn for Verify<'_> {
        type Out = VerifyReport;
        fn call<M: Model>(self, _: &str, s: Scenario<M::Options>) -> anyhow::Result<VerifyReport> {
            Ok(verify_dir::<M>(self.0, &s)?)
        }
    }
    let report = registry.on_scenario(&file, &manifest.scenario_toml, Verify(&args.dir))?;
    for c in &report.cut {
        tell!("note: {c}");
    }
    for r in &report.retired {
        tell!("note: {r}");
    }
    for s in &report.unreadable {
        tell!("error: not verified: {s}");
    }
    for m in &report.mismatches {
        say!("MISMATCH  {m}");
    }
    say!(
        "verified  {} logs: {} events, {} outputs re-executed, {} snapshots matched; {} mismatches{}",
        report.logs,
        group(report.events),
        group(report.outputs),
        group(report.snapshots),
        report.mismatches.len(),
        match report.unreadable.len() {
            0 => String::new(),
            n => format!("; {n} logs could not be read (the run is not verified)"),
        }
    );
    Ok(if !report.unreadable.is_empty() {
        exit::BAD_INPUT
    } else if report.mismatches.is_empty() {
        exit::OK
    } else {
        exit::NONDETERMINISM
    })
}
